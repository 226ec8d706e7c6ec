-- One row per (experiment, exposed unit, registry segment): the raw value of that context attribute
-- in the unit's first exposure, before the experiment-wide top-K bucketing of fct_unit_segments
-- (which needs every unit, so it stays a cheap full rebuild over this table). A missing or empty
-- attribute is `unknown`, one that held PII (redacted at ingestion) is `redacted`; a value is cut to
-- `segment_value_max_chars`. A flat key holding dots (OpenTelemetry's `browser.name`) wins over the
-- nested path of the same name. Incremental by unit (macros/unit_changes.sql): the JSON lookups are
-- the expensive part and a unit's first exposure needs only its own events.
{{ unit_model_config() }}
with attributes as (
    select
        x.experiment_id,
        x.unit_id,
        s.segment,
        s.top_k,
        coalesce({{ json_path_text('e.exposure_context', 's.flat_path') }},
                 {{ json_path_text('e.exposure_context', 's.nested_path') }}) as attribute_value
    from {{ ref('fct_exposures') }} as x
    inner join {{ source('raw', 'registry_experiment_segments') }} as s
        on s.experiment_id = x.experiment_id
    inner join {{ ref('stg_events') }} as e on e.event_id = x.first_exposure_event_id
    where {{ in_changed_units('x.unit_id') }}
      and {{ in_changed_units('e.unit_id') }}
)

select
    experiment_id,
    unit_id,
    segment,
    top_k,
    case when attribute_value is null or trim(attribute_value) = '' then 'unknown'
         when {{ is_redacted('attribute_value') }} then 'redacted'
         else left(attribute_value, {{ var('segment_value_max_chars') }}) end as value,
    '{{ invocation_id }}' as dbt_batch_id
from attributes
