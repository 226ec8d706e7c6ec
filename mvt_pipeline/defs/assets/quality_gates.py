import datetime as dt

import dagster as dg
from dagster_duckdb import DuckDBResource

LOSS_ERROR_RATE = 0.01
LATE_WINDOW_DAYS = 2


@dg.asset_check(asset="dq_daily", blocking=True,
                description=f"Event loss (per-device seq gaps over all ingested data) of every day that is "
                            f"at least {LATE_WINDOW_DAYS} days older than the newest day: ERROR above "
                            f"{LOSS_ERROR_RATE:.0%}. Younger days may still receive late events.")
def loss_rate_matured(duckdb: DuckDBResource) -> dg.AssetCheckResult:
    with duckdb.get_connection() as conn:
        days = conn.execute("select day as dt, n_sequenced, n_lost, loss_rate from marts.dq_daily order by day").df()
    if days.empty:
        return dg.AssetCheckResult(passed=True, metadata={"note": "no data yet"})
    newest = days["dt"].max()
    matured = days[days["dt"] <= newest - dt.timedelta(days=LATE_WINDOW_DAYS)]
    bad = matured[matured["loss_rate"] > LOSS_ERROR_RATE]
    return dg.AssetCheckResult(
        passed=bad.empty, severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "matured_days": len(matured),
            "worst_loss_rate": float(matured["loss_rate"].max()) if len(matured) else None,
            "days_above_threshold": dg.MetadataValue.md(bad.to_markdown(index=False) if len(bad) else "(none)"),
            "threshold": LOSS_ERROR_RATE,
        },
    )


FLIP_WARN_RATE = 0.01
FLIP_ERROR_RATE = 0.10


@dg.asset_check(asset="dq_assignment", blocking=True,
                description=f"Units seen in more than one cell (variant flips) per experiment: WARN above "
                            f"{FLIP_WARN_RATE:.0%}, ERROR above {FLIP_ERROR_RATE:.0%} (DESIGN 5a). Flipped units "
                            "are excluded from the analysis either way.")
def flip_rate(duckdb: DuckDBResource) -> dg.AssetCheckResult:
    with duckdb.get_connection() as conn:
        rates = conn.execute(
            "select experiment_id, sum(n_flipped) as flipped, sum(n_exposed) - sum(n_bots) as units,"
            " sum(n_flipped) / nullif(sum(n_exposed) - sum(n_bots), 0) as flip_rate"
            " from marts.dq_assignment group by 1 order by 1").df()
    worst = float(rates["flip_rate"].max()) if len(rates) and rates["flip_rate"].notna().any() else 0.0
    severity = dg.AssetCheckSeverity.ERROR if worst > FLIP_ERROR_RATE else dg.AssetCheckSeverity.WARN
    return dg.AssetCheckResult(
        passed=worst <= FLIP_WARN_RATE, severity=severity,
        metadata={"worst_flip_rate": worst,
                  "per_experiment": dg.MetadataValue.md(rates.to_markdown(index=False) if len(rates) else "(none)")},
    )
