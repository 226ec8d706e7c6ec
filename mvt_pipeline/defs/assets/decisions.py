import dagster as dg
from dagster_duckdb import DuckDBResource

from ...analysis.decision_night import decide_night
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
    deps=["factorial_effects", "agg_cell_stats", "agg_cell_quantiles", "agg_cell_slo_hourly", "dq_daily"],
    check_specs=[
        dg.AssetCheckSpec("guardrails", asset="experiment_decisions",
                          description="ERROR when a cell or level harms a guardrail beyond its margin, or a cell "
                                      "burns its error budget (pages the owner); WARN while a guardrail is still "
                                      "inconclusive. One row per cell x metric in analysis.guardrails."),
        dg.AssetCheckSpec("business_metrics", asset="experiment_decisions",
                          description="WARN when a primary or secondary metric is significantly worse than control "
                                      "in some cell (a ticket for the owner, not a page)."),
    ],
    pool=WAREHOUSE_POOL,
    kinds={"python", "duckdb"},
    owners=experiment_owners(),
)
def experiment_decisions(context: dg.AssetExecutionContext, duckdb: DuckDBResource):
    """Guardrails per cell and factor level (`analysis.guardrails`), error-budget burn per cell and
    window (`analysis.budget_burn`) and one decision per experiment (`analysis.decisions`): the rule
    that fired, the cell or flag variant to act on, the numbers the rule read (docs/decisions.md)."""
    s = settings()
    registry = load_registry(s.registry_dir)
    as_of = night_of(context)
    with duckdb.get_connection() as conn:
        store.require_marts_for(conn, as_of)
        key = stage_key(context)
        night = decide_night(registry, store.decision_inputs(conn, as_of, key), as_of, s.reports_dir)
        store.replace_nights(conn, {"guardrails": night.guardrails, "budget_burn": night.burn,
                                    "decisions": night.decisions}, as_of, stage_key=key)
        counts = {name: store.table_row_count(conn, name, as_of, key)
                  for name in ("decisions", "guardrails", "budget_burn")}
    for row in night.decisions.itertuples():
        context.log.info(f"{row.experiment_id}: {row.label}")
    yield dg.MaterializeResult(metadata={
        **analysis_tables_metadata(counts),
        "as_of": str(as_of),
        "decisions": dg.MetadataValue.md(night.decision_markdown(registry)),
        **{f"guardrails/{exp}": dg.MetadataValue.md(md) for exp, md in night.guardrail_markdown().items()},
    })
    for check in night.checks():
        yield dg.AssetCheckResult(
            check_name=check.name, passed=check.passed,
            severity=dg.AssetCheckSeverity.ERROR if check.severity == "ERROR" else dg.AssetCheckSeverity.WARN,
            description=check.description,
            metadata={"alert_signals": dg.MetadataValue.json(check.signals),
                      **{k: dg.MetadataValue.md(v) for k, v in check.tables.items()}},
        )
