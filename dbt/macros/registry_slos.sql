{#- The SLOs the experiments use: one row per (experiment, metric with an SLO), whatever role the
    metric has (int_unit_slo_hourly counts with it, agg_cell_slo_hourly labels the buckets with it). -#}
{% macro experiment_slo_metrics() -%}
    select distinct
        em.experiment_id,
        m.metric,
        m.slo_source,
        m.slo_objective,
        m.slo_good_below,
        m.slo_period_days
    from {{ source('raw', 'registry_experiment_metrics') }} as em
    inner join {{ source('raw', 'registry_metrics') }} as m on m.metric = em.metric
    where m.slo_source is not null
{%- endmacro %}
