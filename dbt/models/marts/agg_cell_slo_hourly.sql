-- SLO event counts per (experiment, SLO metric, cell, hour): the input of the error-budget burn
-- check (analysis.budget_burn). For every metric with an SLO that an experiment uses (any role):
-- `events` = deduplicated events of the SLO's source metric (a ratio's numerator events) with a
-- value, of analysable exposed units, at or after the unit's first exposure; `bad_events` = those
-- with value >= slo_good_below. Events stamped after the end of the as_of day are left out (a
-- device clock ahead of the collector must not fill tomorrow's buckets).
-- Why hourly buckets, not windows: the output stays small (cells x hours, not events), and the
-- burn windows (1 h, 6 h, 24 h, per experiment in the registry) are summed in Python from the same
-- buckets, so changing a window needs no SQL change. A full rebuild, but over the per-unit buckets
-- of int_unit_slo_hourly (incremental by unit), not over the events.
with slo_metrics as (
    {{ experiment_slo_metrics() }}
)

select
    u.experiment_id,
    u.metric,
    u.cell_id,
    u.hour,
    u.experiment_id || ':' || u.metric || ':' || u.cell_id || ':' || cast(u.hour as string) as slo_key,
    cast(sum(u.events) as {{ dbt.type_bigint() }}) as events,
    cast(sum(u.bad_events) as {{ dbt.type_bigint() }}) as bad_events,
    max(sm.slo_objective) as slo_objective,
    max(sm.slo_good_below) as slo_good_below,
    max(sm.slo_period_days) as slo_period_days
from {{ ref('int_unit_slo_hourly') }} as u
inner join slo_metrics as sm on sm.experiment_id = u.experiment_id and sm.metric = u.metric
{%- if as_of_date() != '9999-12-31' %}
where u.hour < {{ add_days(as_of_literal(), 1) }}  {#- an hour bucket ends by midnight iff its events do #}
{%- endif %}
group by u.experiment_id, u.metric, u.cell_id, u.hour
