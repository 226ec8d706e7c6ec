-- SLO event counts per (experiment, SLO metric, cell, hour): the input of the error-budget burn
-- check (analysis.budget_burn). For every metric with an SLO that an experiment uses (any role):
-- `events` = deduplicated events of the SLO's source metric (a ratio's numerator events) with a
-- value, of analysable exposed units, at or after the unit's first exposure; `bad_events` = those
-- with value >= slo_good_below. Events stamped after the end of the as_of day are left out (a
-- device clock ahead of the collector must not fill tomorrow's buckets).
-- Why hourly buckets, not windows: the output stays small (cells x hours, not events), and the
-- burn windows (1 h, 6 h, 24 h, per experiment in the registry) are summed in Python from the same
-- buckets, so changing a window needs no SQL change. Full rebuild: first exposures can move.
with slo_metrics as (
    select distinct
        em.experiment_id,
        m.metric,
        m.slo_source,
        m.slo_objective,
        m.slo_good_below,
        m.slo_period_days
    from {{ source('raw', 'registry_experiment_metrics') }} as em
    inner join {{ source('raw', 'registry_metrics') }} as m on m.metric = em.metric
    where m.slo_source is not null
),

slo_events as (
    select
        x.experiment_id,
        sm.metric,
        x.cell_id,
        date_trunc('hour', e.ts) as hour,
        case when e.value >= sm.slo_good_below then 1 else 0 end as is_bad,
        sm.slo_objective,
        sm.slo_good_below,
        sm.slo_period_days
    from {{ ref('fct_exposures') }} as x
    inner join slo_metrics as sm on sm.experiment_id = x.experiment_id
    inner join {{ ref('stg_events') }} as e
        on e.unit_id = x.unit_id and e.event_type = 'metric' and e.metric = sm.slo_source
    where x.is_analysable
      and e.value is not null
      and e.ts >= x.first_exposure_at
      {%- if as_of_date() != '9999-12-31' %}
      and e.ts < {{ add_days(as_of_literal(), 1) }}
      {%- endif %}
)

select
    experiment_id,
    metric,
    cell_id,
    hour,
    experiment_id || ':' || metric || ':' || cell_id || ':' || cast(hour as string) as slo_key,
    count(*) as events,
    sum(is_bad) as bad_events,
    max(slo_objective) as slo_objective,
    max(slo_good_below) as slo_good_below,
    max(slo_period_days) as slo_period_days
from slo_events
group by experiment_id, metric, cell_id, hour
