"""The GX suite for accepted telemetry (`raw.events`): required fields, enums, ranges and
registry membership. Built from the registry so a new experiment needs no code change."""

from __future__ import annotations

from ..registry import Registry

SUITE_NAME = "telemetry_schema"


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
    expectations.append(e.ExpectColumnValuesToBeBetween(column="lag_seconds", min_value=-300, mostly=0.99))
    return SUITE_NAME, expectations
