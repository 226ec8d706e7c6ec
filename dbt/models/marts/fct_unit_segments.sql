-- One row per (experiment, unit, registry segment): the value of that context attribute in the
-- unit's first exposure (the event fct_exposures takes the unit's first exposure from), with
-- bounded cardinality: per (experiment, segment) the `top_k` most frequent values over the
-- experiment's exposed units are kept (ties by value), the rest become `other`; a missing or empty
-- attribute is `unknown`, one that held PII (redacted at ingestion) is `redacted`; a value is cut
-- to `segment_value_max_chars` (a report label, not a document). The ranking
-- never looks at the cell, so the buckets cannot favour an arm. A flat key holding dots
-- (OpenTelemetry's `browser.name`) wins over the nested path of the same name.
-- Full rebuild, like fct_exposures: a unit's first exposure and the ranking need all history.
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
),

valued as (
    select
        *,
        case when attribute_value is null or trim(attribute_value) = '' then 'unknown'
             when attribute_value like '%[redacted:%' then 'redacted'
             else left(attribute_value, {{ var('segment_value_max_chars') }}) end as value
    from attributes
),

ranked as (
    select
        experiment_id, segment, value,
        row_number() over (partition by experiment_id, segment order by count(*) desc, value) as value_rank
    from valued
    where value not in ('unknown', 'redacted')
    group by experiment_id, segment, value
)

select
    v.experiment_id,
    v.unit_id,
    v.segment,
    v.experiment_id || ':' || v.unit_id || ':' || v.segment as unit_segment_key,
    case when r.value_rank > v.top_k then 'other' else v.value end as segment_value
from valued as v
left join ranked as r
    on r.experiment_id = v.experiment_id and r.segment = v.segment and r.value = v.value
