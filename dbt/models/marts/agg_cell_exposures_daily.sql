-- Analysable units per experiment, cell and day of first exposure (the reports' exposure curve):
-- a row per cell and day, so the reports read no per-unit table.
select
    experiment_id,
    cell_id,
    cast(first_exposure_at as date) as day,
    experiment_id || ':' || cell_id || ':' || cast(cast(first_exposure_at as date) as {{ dbt.type_string() }}) as cell_day_key,
    count(*) as units
from {{ ref('fct_exposures') }}
where is_analysable
group by experiment_id, cell_id, cast(first_exposure_at as date)
