-- agg_cell_stats splits only by what the registry names, with bounded cardinality: every segment is
-- `overall` or one of the experiment's registry segments, and a segment holds at most its top_k
-- values plus the `other`, `unknown` and `redacted` buckets. Rows returned are failures.
-- An asset check of agg_cell_stats (dagster-dbt: the `ref` names the model it checks).
{{ config(meta={'dagster': {'ref': {'name': 'agg_cell_stats'}}}) }}
with values_per_segment as (
    select experiment_id, segment, count(distinct segment_value) as n_values
    from {{ ref('agg_cell_stats') }}
    where segment <> 'overall'
    group by experiment_id, segment
)

select v.experiment_id, v.segment, v.n_values, s.top_k
from values_per_segment as v
left join {{ source('raw', 'registry_experiment_segments') }} as s
    on s.experiment_id = v.experiment_id and s.segment = v.segment
where s.segment is null or v.n_values > s.top_k + 3
