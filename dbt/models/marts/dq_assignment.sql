-- Assignment quality per experiment and (first) cell: SRM inputs (n_srm_units: exposed units that
-- are neither bots nor incompletely assigned, counted in their first cell whatever the flip policy)
-- and the contamination counts behind the flip-rate, hash-drift and multi-device checks.
select
    experiment_id,
    cell_id,
    experiment_id || ':' || cell_id as assignment_key,
    count(*) as n_exposed,
    sum(case when is_bot then 1 else 0 end) as n_bots,
    sum(case when is_incomplete then 1 else 0 end) as n_incomplete,
    sum(case when is_flipped then 1 else 0 end) as n_flipped,
    sum(case when is_flipped and not is_analysable then 1 else 0 end) as n_flipped_excluded,
    sum(case when n_devices > 1 then 1 else 0 end) as n_multi_device,
    sum(case when n_hash_versions > 1 then 1 else 0 end) as n_hash_version_changes,
    sum(case when is_analysable then 1 else 0 end) as n_analysable,
    sum(case when not is_bot and not is_incomplete then 1 else 0 end) as n_srm_units,
    cast(sum(case when is_flipped then 1 else 0 end) as double) / count(*) as flip_rate,
    cast(sum(case when n_devices > 1 then 1 else 0 end) as double) / count(*) as multi_device_rate,
    cast(sum(case when n_hash_versions > 1 then 1 else 0 end) as double) / count(*) as hash_version_change_rate
from {{ ref('fct_exposures') }}
group by experiment_id, cell_id
