"""The dump-arrival sensor: a new or changed `dt=` folder starts an ingestion run for that day.

It only looks at the file system (never the warehouse), so it cannot contend for DuckDB's lock.
"""

from __future__ import annotations

import json

import dagster as dg

from ..config import settings
from ..ingest.dump_folders import day_fingerprints
from .jobs import ingest_day_job
from .partitions import daily_partitions


@dg.sensor(job=ingest_day_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED,
           description="Starts `ingest_day` for a dump folder (raw/<source>/dt=YYYY-MM-DD/) that appeared or "
                       "changed since the last tick. Off by default: the nightly schedule ingests the day too.")
def raw_dump_sensor(context: dg.SensorEvaluationContext):
    seen = json.loads(context.cursor) if context.cursor else {}
    current = day_fingerprints(settings().raw_dir)
    valid = set(daily_partitions.get_partition_keys())
    requests, skipped = [], []
    for day, fingerprint in sorted(current.items()):
        if seen.get(day) == fingerprint:
            continue
        if day not in valid:
            skipped.append(day)
            continue
        requests.append(dg.RunRequest(run_key=f"{day}:{fingerprint}", partition_key=day,
                                      tags={"mvt/trigger": "dump_arrival"}))
    if skipped:
        context.log.warning(f"dump folders outside the partition range were ignored: {skipped}")
    context.update_cursor(json.dumps(current))
    if not requests:
        return dg.SkipReason("no new or changed dump folders")
    return requests
