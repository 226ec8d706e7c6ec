-- Quantile inputs per (experiment, quantile metric, cell), exact over the attributed (`post`)
-- events of analysable units: the empirical q-quantile (inverse CDF: the value at rank ceil(n*q)
-- of the n sorted event values) and the order statistics of a distribution-free CI:
-- ranks floor(n*q - z*sqrt(n*q*(1-q))) and ceil(n*q + z*sqrt(n*q*(1-q))), clamped to [1, n].
-- The CI treats events as independent; events cluster within units, so the engine should widen it
-- (n_units is given for that). Written with row_number/count windows instead of percentile
-- functions, whose fraction must be a constant on most warehouses. Full rebuild (small output).
with quantile_metrics as (
    select em.experiment_id, em.metric, em.role, m.source_metric, m.q
    from {{ source('raw', 'registry_experiment_metrics') }} as em
    inner join {{ source('raw', 'registry_metrics') }} as m on m.metric = em.metric
    where m.kind = 'quantile'
),

ranked as (
    select
        o.experiment_id,
        qm.metric,
        qm.role,
        qm.q,
        o.cell_id,
        o.unit_id,
        o.value,
        row_number() over (
            partition by o.experiment_id, qm.metric, o.cell_id order by o.value
        ) as value_rank,
        count(*) over (partition by o.experiment_id, qm.metric, o.cell_id) as n_events
    from {{ ref('fct_outcomes') }} as o
    inner join quantile_metrics as qm
        on qm.experiment_id = o.experiment_id and qm.source_metric = o.source_metric
    where o.period = 'post'
),

ranks as (
    select
        *,
        greatest(1, least(n_events, cast(ceil(n_events * q) as bigint))) as rank_point,
        greatest(1, least(n_events, cast(floor(
            n_events * q - {{ var('quantile_ci_z') }} * sqrt(n_events * q * (1 - q))) as bigint))) as rank_lower,
        greatest(1, least(n_events, cast(ceil(
            n_events * q + {{ var('quantile_ci_z') }} * sqrt(n_events * q * (1 - q))) as bigint))) as rank_upper
    from ranked
)
,

cell_quantiles as (
    select
        experiment_id,
        metric,
        role,
        cell_id,
        experiment_id || ':' || metric || ':' || cell_id as quantile_key,
        max(q) as q,
        {{ var('quantile_ci_z') }} as ci_z,
        count(distinct unit_id) as n_units,
        max(n_events) as n_events,
        max(rank_point) as rank_point,
        max(rank_lower) as rank_lower,
        max(rank_upper) as rank_upper,
        max(case when value_rank = rank_point then value end) as quantile_value,
        max(case when value_rank = rank_lower then value end) as ci_lower_value,
        max(case when value_rank = rank_upper then value end) as ci_upper_value,
        min(value) as min_value,
        max(value) as max_value,
        sum(value) as value_sum,
        sum(value * value) as value_sum_sq
    from ranks
    group by experiment_id, metric, role, cell_id
),

-- Clustering correction inputs (Deng, Knoblich & Lu 2018): per unit, its events m_i and those at
-- or below the cell quantile k_i; the engine turns their sums into a design effect.
unit_counts as (
    select
        r.experiment_id, r.metric, r.cell_id, r.unit_id,
        count(*) as m,
        sum(case when r.value <= c.quantile_value then 1 else 0 end) as k
    from ranked as r
    inner join cell_quantiles as c
        on c.experiment_id = r.experiment_id and c.metric = r.metric and c.cell_id = r.cell_id
    group by r.experiment_id, r.metric, r.cell_id, r.unit_id
),

unit_sums as (
    select
        experiment_id, metric, cell_id,
        sum(k) as k_sum,
        sum(k * k) as k_sum_sq,
        sum(m * m) as m_sum_sq,
        sum(k * m) as k_m_sum
    from unit_counts
    group by experiment_id, metric, cell_id
)

select c.*, s.k_sum, s.k_sum_sq, s.m_sum_sq, s.k_m_sum
from cell_quantiles as c
inner join unit_sums as s
    on s.experiment_id = c.experiment_id and s.metric = c.metric and s.cell_id = c.cell_id
