-- Per dump day and source: the kept (deduplicated) events and their collector lag, beside the
-- accepted and quarantined lines the reports count from the raw tables (store.source_quality_daily).
select
    dt as day,
    source,
    cast(dt as {{ dbt.type_string() }}) || ':' || source as source_day_key,
    count(*) as n_events,
    percentile_cont(0.95) within group (order by {{ seconds_between('ts', 'received_at') }}) as lag_p95_seconds
from {{ ref('stg_events') }}
group by dt, source
