import dagster as dg
import pandas as pd
from dagster_duckdb import DuckDBResource

from ...analysis.bayes_table import all_bayes
from ...analysis.decisions import guardrail_breaches
from ...analysis.effects_table import all_effects
from ...analysis.srm_table import SRM_ALPHA, all_srm
from ...config import settings
from ...registry import load_registry
from ..resources import WAREHOUSE_POOL
from .warehouse_io import as_of_date, replace_rows


@dg.asset(
    group_name="analysis",
    deps=["agg_cell_stats", "agg_cell_quantiles", "dq_assignment", "dq_daily"],
    check_specs=[
        dg.AssetCheckSpec("srm_check", asset="factorial_effects", blocking=True,
                          description="Chi-square of units per cell (and per factor margin) vs the planned "
                                      "allocation, p < 0.001 fails (DESIGN 5a). Blocking: with broken "
                                      "assignment no decision is published; the failure raises an alert."),
        dg.AssetCheckSpec("guardrails", asset="factorial_effects",
                          description="ERROR when a guardrail metric is significantly worse for some level (alerts)."),
    ],
    pool=WAREHOUSE_POOL,
    kinds={"python", "duckdb"},
)
def factorial_effects(context: dg.AssetExecutionContext, duckdb: DuckDBResource):
    """Main effects and interactions for every experiment x metric of the registry, from the
    per-cell sufficient statistics, into `analysis.effects` (fixed-horizon and always-valid
    intervals); SRM into `analysis.srm`; P(cell is best) into `analysis.cell_bayes`."""
    registry = load_registry(settings().registry_dir)
    as_of = as_of_date(context)
    with duckdb.get_connection() as conn:
        cells = conn.execute("select * from marts.agg_cell_stats where segment = 'overall'").df()
        dq = conn.execute("select * from marts.dq_assignment").df()
        quantiles = conn.execute("select * from marts.agg_cell_quantiles").df()
        effects = all_effects(registry, cells, agg_cell_quantiles=quantiles)
        segment_counts = conn.execute(
            "select experiment_id, metric, cell_id, segment, segment_value, n_units from marts.agg_cell_stats"
            " where segment <> 'overall'").df()
        srm = all_srm(registry, dq, segment_counts)
        replace_rows(conn, "effects", effects, as_of)
        replace_rows(conn, "srm", srm, as_of)
        replace_rows(conn, "cell_bayes", all_bayes(registry, cells), as_of)
    ok = effects[effects["status"] == "ok"]
    top = ok[(ok["metric_role"] == "primary")].sort_values("p_value").head(5)
    context.log.info(f"{len(ok)} effects estimated for {effects['experiment_id'].nunique()} experiments")
    yield dg.MaterializeResult(metadata={
        "as_of": str(as_of),
        "effects": len(ok),
        "not_analysed": int((effects["status"] != "ok").sum()),
        "top_primary_effects": dg.MetadataValue.md(
            top[["experiment_id", "metric", "term", "level", "estimate", "ci_low", "ci_high", "q_value"]]
            .to_markdown(index=False) if not top.empty else "(none)"),
    })
    breaches = guardrail_breaches(registry, effects)
    yield dg.AssetCheckResult(
        check_name="guardrails", passed=breaches.empty, severity=dg.AssetCheckSeverity.ERROR,
        description=None if breaches.empty else "; ".join(
            f"{r.experiment_id}: {r.metric} worse for {r.term}={r.level}" for r in breaches.itertuples()),
        metadata={"breaches": dg.MetadataValue.md(
            breaches[["experiment_id", "metric", "term", "level", "estimate", "ci_low", "ci_high", "p_value"]]
            .to_markdown(index=False) if not breaches.empty else "(none)")},
    )
    failed = srm[srm["passed"] == False]  # noqa: E712  (None = not enough data)
    yield dg.AssetCheckResult(
        check_name="srm_check", passed=failed.empty, severity=dg.AssetCheckSeverity.ERROR,
        description=None if failed.empty else "sample ratio mismatch: " + ", ".join(failed["experiment_id"]),
        metadata={
            "alpha": SRM_ALPHA,
            "experiments_failing": dg.MetadataValue.json(failed["experiment_id"].tolist()),
            "p_values": dg.MetadataValue.json(
                {r.experiment_id: (None if pd.isna(r.p_value) else float(r.p_value)) for r in srm.itertuples()}),
        },
    )
