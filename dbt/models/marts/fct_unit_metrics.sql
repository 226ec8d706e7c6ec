-- One row per (experiment, analysable unit, metric): the metric value in the attribution window
-- (zero-filled for binary, count and continuous metrics; NULL-aware for ratio metrics, whose value
-- is numerator/denominator and NULL without any denominator event, and for quantile metrics, whose
-- per-unit value is NULL: their numerator/denominator are the unit's value sum and event count,
-- the quantile itself comes from agg_cell_quantiles), its pre-period covariate, winsorized at the
-- metric's empirical quantile (pooled over the experiment's cells) where the metric says so, and the
-- segment columns from the first exposure's context. A full rebuild over int_unit_metrics (the
-- per-unit sums, incremental): a winsorize cap is a quantile over all of the experiment's units.
with ranked as (
    -- Winsorize at the empirical quantile (the ceil(w * n)-th smallest value): portable SQL,
    -- unlike percentile functions whose fraction must be a constant.
    select
        experiment_id, metric, winsorize, post_value,
        row_number() over (partition by experiment_id, metric order by post_value) as rn,
        count(*) over (partition by experiment_id, metric) as cnt
    from {{ ref('int_unit_metrics') }}
    where winsorize is not null
),

caps as (
    select experiment_id, metric, min(post_value) as value_cap
    from ranked
    where rn >= ceil(winsorize * cnt)
    group by experiment_id, metric
)

select
    p.experiment_id,
    p.unit_id,
    p.metric,
    p.experiment_id || ':' || p.unit_id || ':' || p.metric as unit_metric_key,
    p.role,
    p.kind,
    p.cell_id,
    case
        when p.kind = 'ratio' then
            case when p.post_denominator > 0 then cast(p.post_numerator as double) / p.post_denominator end
        when c.value_cap is not null and p.post_value > c.value_cap then c.value_cap
        else p.post_value
    end as value,
    p.post_value as value_raw,
    c.value_cap,
    case when c.value_cap is not null and p.pre_value > c.value_cap then c.value_cap
         else p.pre_value end as covariate,
    p.post_numerator as numerator,
    p.post_denominator as denominator,
    p.device,
    p.platform,
    p.country,
    p.is_new_user
from {{ ref('int_unit_metrics') }} as p
left join caps as c on c.experiment_id = p.experiment_id and c.metric = p.metric
