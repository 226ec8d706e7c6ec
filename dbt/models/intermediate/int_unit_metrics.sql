-- One row per (experiment, analysable unit, metric): the metric value in the attribution window
-- (zero-filled for binary, count and continuous metrics; for ratio and quantile metrics the
-- numerator and denominator), its pre-period covariate and the segment columns of the first
-- exposure, before winsorizing (fct_unit_metrics caps them: the cap is experiment-wide, so that
-- step stays a full rebuild over this table). Incremental by unit (macros/unit_changes.sql): the
-- sums over a unit's attributed events are the expensive part.
{{ unit_model_config() }}
with metric_defs as (
    select
        em.experiment_id, em.metric, em.role, m.kind, m.source_metric, m.aggregation,
        m.numerator_source, m.numerator_aggregation, m.denominator_source, m.denominator_aggregation,
        m.winsorize
    from {{ source('raw', 'registry_experiment_metrics') }} as em
    inner join {{ source('raw', 'registry_metrics') }} as m on m.metric = em.metric
),

units as (
    select experiment_id, unit_id, cell_id, device, platform, country, is_new_user
    from {{ ref('fct_exposures') }}
    where is_analysable and {{ in_changed_units('unit_id') }}
),

-- per (unit, source metric, period) first, then onto the metrics that read each source: no
-- fan-out of every attributed event over all of the experiment's metrics
source_sums as (
    select
        o.experiment_id, o.unit_id, o.source_metric, o.period,
        sum(o.value) as value_sum,
        count(*) as value_count,
        max(case when o.value > 0 then 1 else 0 end) as value_any
    from {{ ref('fct_outcomes') }} as o
    where {{ in_changed_units('o.unit_id') }}
    group by o.experiment_id, o.unit_id, o.source_metric, o.period
),

sums as (
    select
        o.experiment_id, o.unit_id, d.metric, o.period,
        sum(case when o.source_metric = d.source_metric then o.value_sum end) as src_sum,
        sum(case when o.source_metric = d.source_metric then o.value_count else 0 end) as src_count,
        max(case when o.source_metric = d.source_metric then o.value_any else 0 end) as src_any,
        sum(case when o.source_metric = d.numerator_source then o.value_sum end) as num_sum,
        sum(case when o.source_metric = d.numerator_source then o.value_count else 0 end) as num_count,
        sum(case when o.source_metric = d.denominator_source then o.value_sum end) as den_sum,
        sum(case when o.source_metric = d.denominator_source then o.value_count else 0 end) as den_count
    from source_sums as o
    inner join metric_defs as d
        on d.experiment_id = o.experiment_id
       and o.source_metric in (d.source_metric, d.numerator_source, d.denominator_source)
    group by o.experiment_id, o.unit_id, d.metric, o.period
),

per_unit as (
    select
        u.experiment_id, u.unit_id, u.cell_id, d.metric, d.role, d.kind, d.winsorize,
        u.device, u.platform, u.country, u.is_new_user,
        {% for period in ['post', 'pre'] %}
        {% set s = 's_' ~ period %}
        case d.kind
            when 'binary' then coalesce({{ s }}.src_any, 0)
            when 'count' then coalesce({{ s }}.src_count, 0)
            when 'continuous' then
                case when d.aggregation = 'count' then coalesce({{ s }}.src_count, 0)
                     when d.aggregation = 'max' then coalesce({{ s }}.src_any, 0)
                     else coalesce({{ s }}.src_sum, 0) end
        end as {{ period }}_value,
        case d.kind
            when 'ratio' then
                case when d.numerator_aggregation = 'count' then coalesce({{ s }}.num_count, 0)
                     else coalesce({{ s }}.num_sum, 0) end
            when 'quantile' then coalesce({{ s }}.src_sum, 0)
        end as {{ period }}_numerator,
        case d.kind
            when 'ratio' then
                case when d.denominator_aggregation = 'count' then coalesce({{ s }}.den_count, 0)
                     else coalesce({{ s }}.den_sum, 0) end
            when 'quantile' then coalesce({{ s }}.src_count, 0)
        end as {{ period }}_denominator{{ ',' if not loop.last }}
        {% endfor %}
    from units as u
    inner join metric_defs as d on d.experiment_id = u.experiment_id
    left join sums as s_post
        on s_post.experiment_id = u.experiment_id and s_post.unit_id = u.unit_id
       and s_post.metric = d.metric and s_post.period = 'post'
    left join sums as s_pre
        on s_pre.experiment_id = u.experiment_id and s_pre.unit_id = u.unit_id
       and s_pre.metric = d.metric and s_pre.period = 'pre'
)

select *, '{{ invocation_id }}' as dbt_batch_id from per_unit
