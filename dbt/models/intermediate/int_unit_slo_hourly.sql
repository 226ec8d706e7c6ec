-- One row per (experiment, SLO metric, analysable unit, hour): the unit's SLO events in that hour
-- and the bad ones (value >= slo_good_below), counted as agg_cell_slo_hourly defines them (events
-- of the SLO's source metric with a value, at or after the unit's first exposure). Every hour is
-- kept, also those after the night (a device clock ahead of the collector): agg_cell_slo_hourly
-- leaves those out for the night it builds, so an untouched unit's rows stay right when as_of
-- moves. Incremental by unit (macros/unit_changes.sql): a unit's buckets need only its own events.
{{ unit_model_config() }}
with slo_metrics as (
    {{ experiment_slo_metrics() }}
)

select
    x.experiment_id,
    sm.metric,
    x.unit_id,
    x.cell_id,
    date_trunc('hour', e.ts) as hour,
    count(*) as events,
    sum(case when e.value >= sm.slo_good_below then 1 else 0 end) as bad_events,
    '{{ invocation_id }}' as dbt_batch_id
from {{ ref('fct_exposures') }} as x
inner join slo_metrics as sm on sm.experiment_id = x.experiment_id
inner join {{ ref('stg_events') }} as e
    on e.unit_id = x.unit_id and e.event_type = 'metric' and e.metric = sm.slo_source
where x.is_analysable
  and e.value is not null
  and e.ts >= x.first_exposure_at
  and {{ in_changed_units('x.unit_id') }}
  and {{ in_changed_units('e.unit_id') }}
group by x.experiment_id, sm.metric, x.unit_id, x.cell_id, date_trunc('hour', e.ts)
