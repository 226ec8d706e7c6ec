"""Jobs and the nightly schedule."""

import dagster as dg

from .partitions import daily_partitions

# Everything, for one day: ingest that day's dumps, rebuild marts, re-run the analysis.
nightly_job = dg.define_asset_job(
    "nightly", selection=dg.AssetSelection.all(), partitions_def=daily_partitions,
    description="Materialize the whole graph for one day's partition.",
)

# Only the ingestion of one day (started by the dump-arrival sensor).
ingest_job = dg.define_asset_job(
    "ingest_day", selection=dg.AssetSelection.assets("experiment_registry", "raw_events"),
    partitions_def=daily_partitions,
)

# 03:00 UTC every day, for yesterday's partition (the last complete day).
nightly_schedule = dg.build_schedule_from_partitioned_job(nightly_job, hour_of_day=3, minute_of_hour=0)
