"""The one partitioning of the graph: a night per day. The key is the night's `as_of` date: the data
that had arrived by the end of that day (docs/architecture.md, "Nights and partitions")."""

import datetime as dt

import dagster as dg

from ..config import settings

daily_partitions = dg.DailyPartitionsDefinition(start_date=settings().partitions_start.isoformat(), timezone="UTC")


def night_of(context) -> dt.date:
    """The night a step works on: its partition key as a date."""
    return dt.date.fromisoformat(context.partition_key)

# A night per run for every asset (dbt's as_of is a single day): one policy everywhere, so a job
# over the whole graph has one and a backfill launches a run per night.
ONE_NIGHT_PER_RUN = dg.BackfillPolicy.multi_run(max_partitions_per_run=1)


def one_night_per_run(asset: dg.AssetsDefinition) -> dg.AssetsDefinition:
    """Decorator (above `@dg.asset`): give the asset the shared backfill policy. dagster-dbt sets
    one on the dbt models by default, so the Python assets must carry the same one."""
    return asset.with_attributes(backfill_policy=ONE_NIGHT_PER_RUN)
