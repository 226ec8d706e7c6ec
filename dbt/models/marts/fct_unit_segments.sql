-- One row per (experiment, unit, registry segment): the value of that context attribute in the
-- unit's first exposure (int_unit_attributes: the event fct_exposures takes the unit's first
-- exposure from), with bounded cardinality: per (experiment, segment) the `top_k` most frequent
-- values over the experiment's exposed units are kept (ties by value), the rest become `other`;
-- `unknown` (missing or empty) and `redacted` (PII) stay as they are. The ranking never looks at
-- the cell, so the buckets cannot favour an arm. Full rebuild over int_unit_attributes (no JSON):
-- one unit's new value can move the ranking of the whole experiment.
with ranked as (
    select
        experiment_id, segment, value,
        row_number() over (partition by experiment_id, segment order by count(*) desc, value) as value_rank
    from {{ ref('int_unit_attributes') }}
    where value not in ('unknown', 'redacted')
    group by experiment_id, segment, value
)

select
    v.experiment_id,
    v.unit_id,
    v.segment,
    v.experiment_id || ':' || v.unit_id || ':' || v.segment as unit_segment_key,
    case when r.value_rank > v.top_k then 'other' else v.value end as segment_value
from {{ ref('int_unit_attributes') }} as v
left join ranked as r
    on r.experiment_id = v.experiment_id and r.segment = v.segment and r.value = v.value
