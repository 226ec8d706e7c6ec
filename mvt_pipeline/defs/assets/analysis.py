import dagster as dg
import pandas as pd
from dagster_duckdb import DuckDBResource

from ...analysis.bayes_table import all_bayes
from ...analysis.effects_table import all_effects
from ...analysis.srm_table import SRM_ALPHA, all_srm
from ...config import settings
from ...registry import load_registry
from ...warehouse import store
from ..catalog import analysis_tables_metadata, experiment_owners
from ..night_scope import stage_key
from ..partitions import daily_partitions, night_of, one_night_per_run
from ..resources import WAREHOUSE_POOL


@one_night_per_run
@dg.asset(
    group_name="analysis",
    partitions_def=daily_partitions,
    deps=["agg_cell_stats", "agg_cell_quantiles", "dq_assignment", "dq_daily"],
    check_specs=[
        dg.AssetCheckSpec("srm_check", asset="factorial_effects",
                          description=f"Chi-square of units per cell (and per factor margin) vs the planned "
                                      f"allocation, p < {SRM_ALPHA} fails (docs/architecture.md §5a). Not blocking: "
                                      "the experiment's decision is `invalid` (the others still get theirs) and "
                                      "the owner gets a ticket."),
    ],
    pool=WAREHOUSE_POOL,
    kinds={"python", "duckdb"},
    owners=experiment_owners(),
)
def factorial_effects(context: dg.AssetExecutionContext, duckdb: DuckDBResource):
    """Main effects and interactions for every experiment x metric of the registry, from the
    per-cell sufficient statistics, into `analysis.effects` (fixed-horizon and always-valid
    intervals); SRM into `analysis.srm`; P(cell is best) into `analysis.cell_bayes`."""
    registry = load_registry(settings().registry_dir)
    as_of = night_of(context)
    with duckdb.get_connection() as conn:
        store.require_marts_for(conn, as_of)
        cells = store.cell_stats(conn, overall=True)
        effects = all_effects(registry, cells, agg_cell_quantiles=store.cell_quantiles(conn))
        srm = all_srm(registry, store.assignment_quality(conn), store.segment_unit_counts(conn))
        key = stage_key(context)
        store.replace_nights(conn, {"effects": effects, "srm": srm, "cell_bayes": all_bayes(registry, cells)}, as_of,
                             stage_key=key)
        counts = {name: store.table_row_count(conn, name, as_of, key) for name in ("effects", "srm", "cell_bayes")}
    ok = effects[effects["status"] == "ok"]
    top = ok[(ok["metric_role"] == "primary")].sort_values("p_value").head(5)
    context.log.info(f"{len(ok)} effects estimated for {effects['experiment_id'].nunique()} experiments")
    yield dg.MaterializeResult(metadata={
        **analysis_tables_metadata(counts),
        "as_of": str(as_of),
        "effects": len(ok),
        "not_analysed": int((effects["status"] != "ok").sum()),
        "top_primary_effects": dg.MetadataValue.md(
            top[["experiment_id", "metric", "term", "level", "estimate", "ci_low", "ci_high", "q_value"]]
            .to_markdown(index=False) if not top.empty else "(none)"),
    })
    failed = srm[srm["passed"] == False]  # noqa: E712  (None = not enough data)
    yield dg.AssetCheckResult(
        check_name="srm_check", passed=failed.empty, severity=dg.AssetCheckSeverity.ERROR,
        description=None if failed.empty else "sample ratio mismatch: " + ", ".join(failed["experiment_id"]),
        metadata={
            "alpha": SRM_ALPHA,
            "experiments_failing": dg.MetadataValue.json(failed["experiment_id"].tolist()),
            "p_values": dg.MetadataValue.json(
                {r.experiment_id: (None if pd.isna(r.p_value) else float(r.p_value)) for r in srm.itertuples()}),
            # one alert per experiment with a mismatch, resolved when its assignment is healthy again
            "alert_signals": dg.MetadataValue.json([
                {"experiment_id": r.experiment_id, "symptom": "srm", "firing": not bool(r.passed),
                 "severity": "ERROR", "route": "ticket", "observed": None if pd.isna(r.p_value) else float(r.p_value),
                 "threshold": SRM_ALPHA, "metric": "units per cell (chi-square p)",
                 "summary": f"sample ratio mismatch, chi-square p = {r.p_value:.2g} < {SRM_ALPHA}"
                 if not bool(r.passed) else "assignment ratios as planned"}
                for r in srm.itertuples() if not pd.isna(r.p_value)]),
        },
    )
