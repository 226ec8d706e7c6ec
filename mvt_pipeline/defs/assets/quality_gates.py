import dagster as dg
from dagster_duckdb import DuckDBResource

from ...quality.mart_gates import flip_status, matured_days
from ...quality.telemetry_metrics import ERROR, OK, Thresholds
from ...warehouse import store
from ..partitions import daily_partitions, night_of

_T = Thresholds()


@dg.asset_check(asset="dq_daily", blocking=True, partitions_def=daily_partitions,
                description=f"Event loss (per-device seq gaps over the night's data) of every day at least "
                            f"{_T.late_window_days} days older than the night: ERROR above {_T.loss_error:.0%}. "
                            "Younger days may still receive late events.")
def loss_rate_matured(context: dg.AssetCheckExecutionContext, duckdb: DuckDBResource) -> dg.AssetCheckResult:
    with duckdb.get_connection() as conn:
        days = store.daily_loss(conn)
    if days.empty:
        return dg.AssetCheckResult(passed=True, metadata={"note": "no data yet"})
    matured, bad = matured_days(days, night_of(context), _T)
    return dg.AssetCheckResult(
        passed=bad.empty, severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "matured_days": len(matured),
            "worst_loss_rate": float(matured["loss_rate"].max()) if len(matured) else None,
            "days_above_threshold": dg.MetadataValue.md(bad.to_markdown(index=False) if len(bad) else "(none)"),
            "threshold": _T.loss_error,
        },
    )


@dg.asset_check(asset="dq_assignment", blocking=True, partitions_def=daily_partitions,
                description=f"Units seen in more than one cell (variant flips) per experiment: WARN above "
                            f"{_T.flip_warn:.0%}, ERROR above {_T.flip_error:.0%} (docs/architecture.md §5a). "
                            "Flipped units are excluded from the analysis either way.")
def flip_rate(duckdb: DuckDBResource) -> dg.AssetCheckResult:
    with duckdb.get_connection() as conn:
        rates = store.flip_rates(conn)
    worst, status = flip_status(rates, _T)
    return dg.AssetCheckResult(
        passed=status == OK, severity=dg.AssetCheckSeverity.ERROR if status == ERROR else dg.AssetCheckSeverity.WARN,
        metadata={"worst_flip_rate": worst,
                  "per_experiment": dg.MetadataValue.md(rates.to_markdown(index=False) if len(rates) else "(none)")},
    )
