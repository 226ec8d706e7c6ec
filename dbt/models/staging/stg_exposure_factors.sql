-- One row per (exposure event, registry factor present in its assignment). Handles both exposure
-- forms of the contract: the whole cell in one event, or one event per factor; `n_event_factors`
-- (factors carried by the same event) tells them apart for the cells-seen count in fct_exposures.
-- A table rather than a view: fct_exposures reads it several times and the JSON lookups are the
-- expensive part. Incremental by unit: only the units whose events changed are recomputed
-- (macros/unit_changes.sql).
{{ unit_model_config() }}
with factor_rows as (
    select
        e.event_id,
        e.experiment_id,
        e.unit_id,
        e.device_id,
        e.ts,
        e.hash_version,
        e.user_agent,
        e.device,
        e.platform,
        e.country,
        e.is_new_user,
        f.factor,
        f.position,
        {{ json_text('e.assignment', 'f.factor') }} as level
    from {{ ref('stg_events') }} as e
    inner join {{ source('raw', 'registry_factors') }} as f
        on f.experiment_id = e.experiment_id
    where e.event_type = 'exposure'
      and {{ in_changed_units('e.unit_id') }}
)

select
    *,
    count(*) over (partition by event_id) as n_event_factors,
    '{{ invocation_id }}' as dbt_batch_id
from factor_rows
where level is not null
