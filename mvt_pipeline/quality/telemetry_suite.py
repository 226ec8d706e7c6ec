"""The GX suite for accepted telemetry (`raw.events`): required fields, enums, ranges and
registry membership. Built from the registry so a new experiment needs no code change.

`event_id` uniqueness is deliberately not here: raw data legitimately holds retries, and
uniqueness after dedup is a dbt test on `stg_events`. Run it on a sample of the partition
(`sample_sql`): the expectations are per-row properties, so a reservoir sample finds systematic
problems without loading the day into pandas.
"""

from __future__ import annotations

from ..registry import Registry

SUITE_NAME = "telemetry_schema"
SAMPLE_ROWS = 200_000


def sample_sql(rows: int = SAMPLE_ROWS) -> str:
    """SQL (one parameter: the partition) for the frame the suite validates."""
    return f"""
        select event_id, event_type, ts, unit_id, experiment_id, seq, value, pii_redactions,
               date_diff('millisecond', ts, received_at) / 1000.0 as lag_seconds
        from raw.events where dt = ?::date
        using sample reservoir({rows} rows) repeatable (7)"""


def build_telemetry_suite(registry: Registry) -> tuple[str, list]:
    """(suite name, expectations); the runner binds them to an ephemeral context."""
    import great_expectations as gx

    e = gx.expectations
    expectations: list = []
    for column in ("event_id", "event_type", "ts", "unit_id"):
        expectations.append(e.ExpectColumnValuesToNotBeNull(column=column))
    expectations.append(e.ExpectColumnValuesToBeInSet(column="event_type", value_set=["exposure", "metric"]))
    expectations.append(e.ExpectColumnValuesToBeInSet(
        column="experiment_id", value_set=sorted(x.id for x in registry.experiments)))
    expectations.append(e.ExpectColumnValuesToBeBetween(column="seq", min_value=0))
    expectations.append(e.ExpectColumnValuesToBeBetween(column="pii_redactions", min_value=0))
    expectations.append(e.ExpectColumnValuesToBeBetween(column="lag_seconds", min_value=-300, mostly=0.99))
    return SUITE_NAME, expectations
