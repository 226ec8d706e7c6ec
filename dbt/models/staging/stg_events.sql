-- Typed telemetry, deduplicated on event_id: the copy received first wins; copies that carry a
-- different payload under the same id are flagged so the conflict rate can be monitored.
with ranked as (
    select
        e.*,
        row_number() over (
            partition by event_id
            order by received_at nulls last, dt, source_file, line_number
        ) as copy_rank,
        count(*) over (partition by event_id) as n_copies,
        min(payload_hash) over (partition by event_id) as min_payload,
        max(payload_hash) over (partition by event_id) as max_payload
    from {{ source('raw', 'events') }} as e
)

select
    event_id,
    event_type,
    ts,
    received_at,
    unit_id,
    device_id,
    session_id,
    seq,
    experiment_id,
    assignment,
    hash_version,
    metric,
    value,
    {{ json_field('context', 'device') }} as device,
    {{ json_field('context', 'platform') }} as platform,
    {{ json_field('context', 'country') }} as country,
    {{ json_field('context', 'is_new_user') }} as is_new_user,
    {{ json_field('context', 'user_agent') }} as user_agent,
    n_copies,
    min_payload <> max_payload as payload_conflict,
    source,
    dt
from ranked
where copy_rank = 1
