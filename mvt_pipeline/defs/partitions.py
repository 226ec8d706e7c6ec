"""The daily partitions of ingestion: one per `dt=YYYY-MM-DD` dump folder."""

import os

import dagster as dg

PARTITIONS_START = os.environ.get("MVT_PARTITIONS_START", "2026-10-01")

daily_partitions = dg.DailyPartitionsDefinition(start_date=PARTITIONS_START, timezone="UTC")
