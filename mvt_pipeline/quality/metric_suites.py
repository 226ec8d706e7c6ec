"""GX suites over the one-row-per-source frames of `telemetry_metrics`, and their audit trail.

Validating aggregates instead of events keeps GX's pandas engine on a few rows whatever the
volume, while the result is still standard GX JSON, stored in `analysis.gx_validations` for audit.
The suite encodes the ERROR threshold of each metric (the line past which the day must not be
analysed); WARN levels stay in `QualityMetric.status`, because a failed GX suite is a hard fail.
"""

from __future__ import annotations

import duckdb

from ..warehouse.analysis_schema import ensure_table
from .gx_runner import SuiteOutcome, run_suite
from .telemetry_metrics import QualityMetric, Thresholds

# metric name -> (column in the per-source frame, GX bounds from thresholds, blocking?). The rate
# metrics are validated on the lower one-sided bound of the rate (`<rate>_lower`, None for a source
# with fewer than `Thresholds.min_sample` trials, which GX then skips: the metric's details list it
# as too few to judge), so the suite and `QualityMetric.status` apply the same sample-size rule.
SUITE_BOUNDS = {
    "loss_rate": ("loss_rate_lower", lambda t: (0.0, t.loss_error), True),
    "lag_p95": ("lag_p95_s", lambda t: (None, t.lag_p95_error_s), True),
    "quarantine_rate": ("quarantine_rate_lower", lambda t: (0.0, t.quarantine_error), True),
    "duplicate_rate": ("duplicate_rate_lower", lambda t: (0.0, t.duplicate_warn), False),
    "bot_share": ("bot_share_lower", lambda t: (0.0, t.bot_share_warn), False),
    "volume_change": ("volume_change", lambda t: (-t.volume_change_warn, t.volume_change_warn), False),
}


# Loss cannot be judged on the day it arrives (its late events would count as lost: dq_daily's
# loss_rate_matured is the gate) and high lag means late data, not bad data: both are reported at
# ERROR severity (and alerted) without stopping the night.
NON_BLOCKING_AT_INGESTION = frozenset({"loss_rate", "lag_p95"})


def blocks_the_night(metric_name: str) -> bool:
    """Whether an ERROR of this ingestion metric stops the night's analysis (a day mostly garbage)."""
    return (metric_name in SUITE_BOUNDS and SUITE_BOUNDS[metric_name][2]
            and metric_name not in NON_BLOCKING_AT_INGESTION)


def metric_suite(metric_name: str, t: Thresholds = Thresholds()) -> tuple[str, list]:
    """(suite name, expectations) for one metric's per-source frame."""
    import great_expectations as gx

    column, bounds, _blocking = SUITE_BOUNDS[metric_name]
    low, high = bounds(t)
    return f"telemetry_{metric_name}", [
        gx.expectations.ExpectColumnToExist(column=column),
        gx.expectations.ExpectColumnValuesToBeBetween(column=column, min_value=low, max_value=high),
    ]


def validate_metric(metric: QualityMetric, t: Thresholds = Thresholds()) -> SuiteOutcome | None:
    """Run the metric's suite on its frame; None when the metric has no GX suite or no rows."""
    if metric.name not in SUITE_BOUNDS or not metric.per_source:
        return None
    frame = metric.frame()
    column = SUITE_BOUNDS[metric.name][0]
    if column in frame:
        frame[column] = frame[column].astype("float64")  # NULL (e.g. no history) -> NaN, ignored by GX
    return run_suite(frame, metric_suite(metric.name, t))


def save_validation(conn: duckdb.DuckDBPyConnection, partition: str, suite: str, outcome: SuiteOutcome) -> None:
    """Replace (partition, suite)'s stored GX result: re-running a day keeps one audit row per suite."""
    ensure_table(conn, "gx_validations")
    conn.execute("delete from analysis.gx_validations where dt = ?::date and suite = ?", [partition, suite])
    conn.execute("insert into analysis.gx_validations (dt, suite, success, evaluated, failed, result, validated_at)"
                 " values (?::date, ?, ?, ?, ?, ?, now()::timestamp)",
                 [partition, suite, outcome.success, outcome.evaluated, len(outcome.failed), outcome.result_json])
