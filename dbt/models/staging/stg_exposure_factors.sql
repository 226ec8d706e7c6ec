-- One row per (exposure event, registry factor present in its assignment). Handles both exposure
-- forms of the contract: the whole cell in one event, or one event per factor.
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
  and {{ json_text('e.assignment', 'f.factor') }} is not null
