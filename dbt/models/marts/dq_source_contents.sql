-- Which source carries which experiment's exposures and which metric events (each experiment's
-- report shows the quality of its own sources).
select distinct source, event_type, experiment_id, metric
from {{ ref('stg_events') }}
