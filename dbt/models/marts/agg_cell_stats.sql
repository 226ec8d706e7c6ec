-- Exact per-cell sufficient statistics, overall (segment = 'overall', segment_value = 'all') and
-- per registry segment (fct_unit_segments: the top-K values and `other`): everything the stats
-- engine needs, so it never reads per-unit rows.
-- Beside the plain sums, sums of shifted values (`*_shifted`) with the shift carried per
-- (experiment, metric) (`shift`, `cov_shift`, `den_shift`; `num_shift` is a ratio r0 and the
-- numerator sums are of N - r0 * D): `sum_sq - sum^2/n` cancels catastrophically when the mean is
-- large against the spread, the shifted sums do not (docs/statistics.md, stats/shifts.py). Binary
-- metrics are 0/1 and keep shift 0.
with shifts as (
    select experiment_id, metric,
           case when min(kind) = 'binary' then 0.0 else coalesce(avg(value), 0.0) end as shift,
           case when min(kind) = 'binary' then 0.0 else coalesce(avg(covariate), 0.0) end as cov_shift,
           coalesce(sum(numerator) / nullif(sum(denominator), 0), 0.0) as num_shift,
           coalesce(avg(denominator), 0.0) as den_shift
    from {{ ref('fct_unit_metrics') }}
    group by experiment_id, metric
),

segmented as (
    select experiment_id, metric, role, kind, cell_id, 'overall' as segment, 'all' as segment_value,
           value, covariate, numerator, denominator
    from {{ ref('fct_unit_metrics') }}
    union all
    select u.experiment_id, u.metric, u.role, u.kind, u.cell_id, s.segment, s.segment_value,
           u.value, u.covariate, u.numerator, u.denominator
    from {{ ref('fct_unit_metrics') }} as u
    inner join {{ ref('fct_unit_segments') }} as s
        on s.experiment_id = u.experiment_id and s.unit_id = u.unit_id
),

shifted as (
    select g.*, k.shift, k.cov_shift, k.num_shift, k.den_shift,
           g.value - k.shift as y, g.covariate - k.cov_shift as x,
           g.numerator - k.num_shift * g.denominator as m, g.denominator - k.den_shift as d
    from segmented as g
    inner join shifts as k on k.experiment_id = g.experiment_id and k.metric = g.metric
)

select
    experiment_id,
    metric,
    role,
    kind,
    cell_id,
    segment,
    segment_value,
    experiment_id || ':' || metric || ':' || cell_id || ':' || segment || ':' || segment_value as cell_key,
    count(*) as n_units,
    count(value) as n,
    sum(value) as sum,
    sum(value * value) as sum_sq,
    sum(covariate) as cov_sum,
    sum(covariate * covariate) as cov_sum_sq,
    sum(value * covariate) as cross_sum,
    sum(numerator) as num_sum,
    sum(denominator) as den_sum,
    sum(numerator * numerator) as num_sum_sq,
    sum(denominator * denominator) as den_sum_sq,
    sum(numerator * denominator) as num_den_sum,
    min(shift) as shift,
    sum(y) as sum_shifted,
    sum(y * y) as sum_sq_shifted,
    min(cov_shift) as cov_shift,
    sum(x) as cov_sum_shifted,
    sum(x * x) as cov_sum_sq_shifted,
    sum(y * x) as cross_sum_shifted,
    min(num_shift) as num_shift,
    min(den_shift) as den_shift,
    sum(m) as num_sum_shifted,
    sum(d) as den_sum_shifted,
    sum(m * m) as num_sum_sq_shifted,
    sum(d * d) as den_sum_sq_shifted,
    sum(m * d) as num_den_sum_shifted
from shifted
group by experiment_id, metric, role, kind, cell_id, segment, segment_value
