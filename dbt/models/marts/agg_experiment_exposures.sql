-- Per experiment: its last exposure and how many units were exposed (the stale-flag audit's
-- activity), so the audit reads a row per experiment instead of the events.
select
    experiment_id,
    max(ts) as last_exposure_at,
    count(distinct unit_id) as units
from {{ ref('stg_events') }}
where event_type = 'exposure' and experiment_id is not null
group by experiment_id
