-- Typed telemetry, deduplicated on event_id across ALL partitions: the copy received first wins
-- (ties: earlier dt partition, then file and line); copies are counted and an id whose copies carry
-- different payloads is flagged (payload_conflict).
--
-- Incremental by dt partition, exact (a full refresh gives the same rows; tested):
--   * changed partitions = the dt values of raw rows ingested after this table's watermark
--     (ingestion replaces a whole partition and stamps every row with ingested_at, so a new day and
--     a re-ingested old day both show up);
--   * affected ids = ids with a copy in a changed partition, plus ids already here whose copies
--     spanned a changed partition (their old copies may have been replaced or removed);
--   * affected ids are re-deduplicated from ALL their raw copies (any day), so "earliest received
--     copy wins" stays global, and merged by delete+insert on event_id. An id whose copies all
--     vanished gets a tombstone row (event_type null) that the post-hook deletes.
-- Only raw rows with dt <= var('as_of') count (the night's data; see macros/as_of.sql). The as_of
-- of the last build is kept in `<this>__as_of`; when a build moves it (the next night, or a backfill
-- of an earlier one), the partitions between the two nights are changed partitions too, and ids whose
-- copies reach past the new as_of are affected, so a backfill of night N equals a warehouse that only
-- ever saw the days up to N.
-- Each build logs the units it touched (`dbt_batch_id` marks its rows, `prior_unit_id` the unit an id
-- had before, when that differs) in `stg_events__unit_changes`: the per-unit marts recompute only
-- those units (macros/unit_changes.sql).
-- A nightly run therefore costs one column scan of raw.events (event_id, dt, ingested_at) plus the
-- window over the affected copies, not a sort of all history.
{{ events_model_config() }}


{% if is_incremental() %}
    {%- set state = existing_sibling_relation(this, 'as_of') -%}
    {#- a table built before the as_of state existed held every ingested day -#}
    {%- set previous_as_of = "(select max(as_of) from " ~ state ~ ")" if state is not none
                             else "cast('9999-12-31' as date)" -%}
{% endif %}

with
{% if is_incremental() %}
changed_partitions as (
    select distinct dt
    from {{ source('raw', 'events') }}
    where {{ arrived_by_as_of('dt') }}
      and (ingested_at > (select max(ingested_watermark) from {{ this }})
           or dt > {{ previous_as_of }})
),

affected_ids as (
    select event_id
    from {{ source('raw', 'events') }}
    where dt in (select dt from changed_partitions)
    union
    select t.event_id
    from {{ this }} as t
    inner join changed_partitions as c
        on c.dt >= t.first_copy_dt and c.dt <= t.last_copy_dt
    union
    -- a backfill of an earlier night: copies that arrived after it no longer count
    select event_id
    from {{ this }}
    where last_copy_dt > {{ as_of_literal() }}
),

copies as (
    select *
    from {{ source('raw', 'events') }}
    where event_id in (select event_id from affected_ids)
      and {{ arrived_by_as_of('dt') }}
),

previous as (
    select event_id, unit_id as prior_unit_id
    from {{ this }}
    where event_id in (select event_id from affected_ids)
),
{% else %}
copies as (
    select * from {{ source('raw', 'events') }}
    where {{ arrived_by_as_of('dt') }}
),
{% endif %}

ranked as (
    select
        c.*,
        row_number() over (
            partition by event_id
            order by received_at nulls last, dt, source_file, line_number
        ) as copy_rank,
        count(*) over (partition by event_id) as n_copies,
        min(payload_hash) over (partition by event_id) as min_payload,
        max(payload_hash) over (partition by event_id) as max_payload,
        min(dt) over (partition by event_id) as first_copy_dt,
        max(dt) over (partition by event_id) as last_copy_dt
    from copies as c
),

{%- set context_keys = ['device', 'platform', 'country', 'is_new_user', 'user_agent', 'app_version'] %}
deduped as (
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
        cell_id as sent_cell_id,
        hash_version,
        metric,
        value,
        {#- a segment value that held PII was redacted at ingestion ([redacted:<kind>]): it becomes
            one 'redacted' segment instead of leaking the rest of the text into the marts -#}
        {%- for seg in ['device', 'platform', 'country', 'is_new_user'] %}
        {%- set field = json_fields_get('ctx', context_keys, seg) %}
        case when {{ is_redacted(field) }} then 'redacted' else {{ field }} end as {{ seg }},
        {%- endfor %}
        {{ json_fields_get('ctx', context_keys, 'user_agent') }} as user_agent,
        {{ json_fields_get('ctx', context_keys, 'app_version') }} as app_version,
        {#- an exposure's whole context: segments may be any attribute the registry names
            (fct_unit_segments); exposures are a small share of events -#}
        case when event_type = 'exposure' then coalesce(context, '{}') end as exposure_context,
        n_copies,
        min_payload <> max_payload as payload_conflict,
        payload_hash,
        source,
        dt,
        first_copy_dt,
        last_copy_dt,
        (select max(ingested_at) from {{ source('raw', 'events') }}) as ingested_watermark,
        '{{ invocation_id }}' as dbt_batch_id
    from (
        {#- the context's fields, parsed once per winning copy -#}
        select *, {{ json_fields('context', context_keys) }} as ctx from ranked where copy_rank = 1
    ) as ranked
)

{% if is_incremental() %}
select d.*, case when p.prior_unit_id is distinct from d.unit_id then p.prior_unit_id end as prior_unit_id
from deduped as d
left join previous as p on p.event_id = d.event_id
union all
select
    a.event_id,
    null, null, null, null, null, null, null, null, null, null, null, null, null,
    null, null, null, null, null, null, null, null, null, null, null, null, null,
    null, null, '{{ invocation_id }}', p.prior_unit_id
from affected_ids as a
left join previous as p on p.event_id = a.event_id
where a.event_id not in (select event_id from deduped)
{% else %}
select *, cast(null as {{ dbt.type_string() }}) as prior_unit_id from deduped
{% endif %}
