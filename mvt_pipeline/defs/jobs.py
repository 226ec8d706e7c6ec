"""The jobs: `nightly` (the whole graph for one night) and `ingest_day` (ingestion only)."""

import dagster as dg

INGESTION = dg.AssetSelection.assets("experiment_registry", "raw_events")

# Every asset shares the daily partitions, so the jobs are partitioned by them too.
nightly_job = dg.define_asset_job(
    "nightly", selection=dg.AssetSelection.all(),
    description="One night: ingest that day's dumps, build the marts from the data up to that day "
                "(dbt var as_of), then effects, HTE, the flag audit and the decision reports.",
)

ingest_day_job = dg.define_asset_job(
    "ingest_day", selection=INGESTION,
    description="Ingest one day's dump folders (started by raw_dump_sensor when a folder appears or changes).",
)
