-- Exact per-cell sufficient statistics, overall (segment = 'overall', segment_value = 'all') and
-- per registry segment: everything the stats engine needs, so it never reads per-unit rows.
with segmented as (
    select experiment_id, metric, role, kind, cell_id, 'overall' as segment, 'all' as segment_value,
           value, covariate, numerator, denominator
    from {{ ref('fct_unit_metrics') }}
    {% for seg in ['device', 'platform', 'country', 'is_new_user'] %}
    union all
    select u.experiment_id, u.metric, u.role, u.kind, u.cell_id, '{{ seg }}', coalesce(u.{{ seg }}, 'unknown'),
           u.value, u.covariate, u.numerator, u.denominator
    from {{ ref('fct_unit_metrics') }} as u
    inner join {{ source('raw', 'registry_experiment_segments') }} as s
        on s.experiment_id = u.experiment_id and s.segment = '{{ seg }}'
    {% endfor %}
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
    sum(numerator * denominator) as num_den_sum
from segmented
group by experiment_id, metric, role, kind, cell_id, segment, segment_value
