-- Deduplicated metric events of analysable exposed units, one row per (experiment, event):
-- `post` inside the half-open attribution window [first exposure, first exposure + window days)
-- (an event exactly at first exposure counts, one exactly window days later does not), `pre` in the
-- half-open pre-period [first exposure - pre_period_days, first exposure) that feeds the CUPED
-- covariate. Events elsewhere are not attributed. Only sources some metric of the experiment uses.
-- Incremental by unit (macros/unit_changes.sql): a unit's attribution needs only its own first
-- exposure and events, so late data that moves a first exposure recomputes that unit.
{{ unit_model_config() }}
with experiment_sources as (
    select distinct em.experiment_id, s.source_metric
    from {{ source('raw', 'registry_experiment_metrics') }} as em
    inner join (
        select metric, source_metric from {{ source('raw', 'registry_metrics') }}
        union all
        select metric, numerator_source from {{ source('raw', 'registry_metrics') }}
        union all
        select metric, denominator_source from {{ source('raw', 'registry_metrics') }}
    ) as s on s.metric = em.metric
    where s.source_metric is not null
),

candidate as (
    select
        x.experiment_id,
        x.unit_id,
        x.experiment_id || ':' || e.event_id as outcome_key,
        x.cell_id,
        e.event_id,
        e.metric as source_metric,
        e.value,
        e.ts,
        case
            when e.ts >= x.first_exposure_at
             and e.ts < x.attribution_end_at then 'post'
            when e.ts < x.first_exposure_at
             and e.ts >= {{ add_days('x.first_exposure_at', '-r.pre_period_days') }} then 'pre'
        end as period
    from {{ ref('fct_exposures') }} as x
    inner join {{ source('raw', 'registry_experiments') }} as r on r.experiment_id = x.experiment_id
    inner join {{ ref('stg_events') }} as e on e.unit_id = x.unit_id and e.event_type = 'metric'
    inner join experiment_sources as s
        on s.experiment_id = x.experiment_id and s.source_metric = e.metric
    where x.is_analysable
      and {{ in_changed_units('x.unit_id') }}
      and {{ in_changed_units('e.unit_id') }}
)

select *, '{{ invocation_id }}' as dbt_batch_id from candidate where period is not null
