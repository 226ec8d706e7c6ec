import dagster as dg
import pandas as pd
from dagster_duckdb import DuckDBResource

from ...quality.mart_gates import flip_status, judge_flips, matured_days, not_measurable, too_few
from ...quality.telemetry_metrics import ERROR, LOSS_NO_SEQ, OK, Thresholds, sample_size_rule
from ...warehouse import store
from ..partitions import daily_partitions, night_of

_T = Thresholds()
_RULE = sample_size_rule(_T)


def _md(frame, columns) -> dg.MetadataValue:
    return dg.MetadataValue.md(frame[columns].to_markdown(index=False) if len(frame) else "(none)")


@dg.asset_check(asset="dq_daily", blocking=True, partitions_def=daily_partitions,
                description=f"Event loss (per-device seq gaps over the night's data) of every day at least "
                            f"{_T.late_window_days} days older than the night: ERROR when the loss rate is "
                            f"above {_T.loss_error:.0%} {_RULE}. Younger days may still receive late events. A day "
                            f"with events but none carrying seq is WARN: loss not measurable.")
def loss_rate_matured(context: dg.AssetCheckExecutionContext, duckdb: DuckDBResource) -> dg.AssetCheckResult:
    with duckdb.get_connection() as conn:
        days = store.daily_loss(conn)
    if days.empty:
        return dg.AssetCheckResult(passed=True, metadata={"note": "no data yet"})
    matured, bad = matured_days(days, night_of(context), _T)
    small, blind = too_few(matured), not_measurable(matured)
    bounds = pd.to_numeric(matured["lower_bound"], errors="coerce")
    columns = ["dt", "n_events", "n", "n_lost", "loss_rate", "lower_bound", "threshold", "verdict"]
    return dg.AssetCheckResult(
        # days without any sequenced event cannot show loss: a WARN saying so, never a green pass
        passed=bad.empty and blind.empty,
        severity=dg.AssetCheckSeverity.ERROR if not bad.empty else dg.AssetCheckSeverity.WARN,
        description=(f"loss not measurable on {len(blind)} matured day(s): {LOSS_NO_SEQ}"
                     if bad.empty and not blind.empty else None),
        metadata={
            "not_measurable_days": _md(blind, columns),
            "n_not_measurable_days": len(blind),
            "matured_days": len(matured),
            "worst_loss_rate": float(matured["loss_rate"].max()) if len(matured) else None,
            "worst_lower_bound": float(bounds.max()) if bounds.notna().any() else None,
            "threshold": _T.loss_error,
            "min_sample": _T.min_sample,
            "confidence": _T.confidence,
            "days_above_threshold": _md(bad, columns),
            "too_few_events_to_judge": _md(small, columns),
            "n_too_few_events_to_judge": len(small),
            "per_day": _md(matured, columns),
        },
    )


@dg.asset_check(asset="dq_assignment", blocking=True, partitions_def=daily_partitions,
                description=f"Units seen in more than one cell (variant flips) per experiment: WARN above "
                            f"{_T.flip_warn:.0%}, ERROR above {_T.flip_error:.0%} (docs/architecture.md §5a), "
                            f"{_RULE}. Flipped units are excluded from the analysis either way.")
def flip_rate(duckdb: DuckDBResource) -> dg.AssetCheckResult:
    with duckdb.get_connection() as conn:
        rates = store.flip_rates(conn)
    worst, status = flip_status(rates, _T)
    judged = judge_flips(rates, _T)
    columns = ["experiment_id", "flipped", "units", "flip_rate", "lower_bound", "verdict"]
    return dg.AssetCheckResult(
        passed=status == OK, severity=dg.AssetCheckSeverity.ERROR if status == ERROR else dg.AssetCheckSeverity.WARN,
        metadata={"worst_flip_rate": worst,
                  "warn_above": _T.flip_warn, "error_above": _T.flip_error,
                  "min_sample": _T.min_sample, "confidence": _T.confidence,
                  "too_few_units_to_judge": _md(too_few(judged), columns),
                  "per_experiment": _md(judged, columns)},
    )
