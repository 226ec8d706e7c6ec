import dagster as dg
from dagster_duckdb import DuckDBResource

from ...config import settings
from ...registry import load_registry
from ...reports.publish import NightInputs, render_night, write_pages
from ...warehouse import store
from ..catalog import experiment_owners
from ..partitions import daily_partitions, night_of, one_night_per_run
from ..resources import WAREHOUSE_POOL


@one_night_per_run
@dg.asset(group_name="reporting", partitions_def=daily_partitions,
          deps=["factorial_effects", "experiment_decisions", "hte_effects", "stale_flag_audit"],
          pool=WAREHOUSE_POOL, kinds={"html"}, owners=experiment_owners())
def decision_reports(context: dg.AssetExecutionContext, duckdb: DuckDBResource) -> dg.MaterializeResult:
    """One self-contained HTML decision page per experiment plus an index, showing the night's
    `analysis.decisions` and `analysis.guardrails` rows."""
    s = settings()
    registry = load_registry(s.registry_dir)
    as_of = night_of(context)
    with duckdb.get_connection() as conn:
        store.require_marts_for(conn, as_of)
        inputs = NightInputs(
            effects=store.night(conn, "effects", as_of), srm=store.night(conn, "srm", as_of),
            cells=store.report_cells(conn), assignment=store.assignment_summary(conn),
            stale_flags=store.night(conn, "stale_flags", as_of), ingestion=store.ingestion_totals(conn, as_of),
            hte=store.night(conn, "hte", as_of), heterogeneity=store.night(conn, "hte_heterogeneity", as_of),
            bayes=store.night(conn, "cell_bayes", as_of), decisions=store.night(conn, "decisions", as_of),
            guardrails=store.night(conn, "guardrails", as_of))
        pages = render_night(registry, inputs, as_of, s.reports_dir)
        written = write_pages(s.reports_dir, pages)
    decisions = inputs.decisions
    context.log.info(f"{len(written)} pages written to {s.reports_dir}")
    return dg.MaterializeResult(metadata={
        "index": dg.MetadataValue.path(str(s.reports_dir / "index.html")),
        "reports": len(written) - 1,
        "decisions": dg.MetadataValue.md(decisions[["experiment_id", "decision"]].to_markdown(index=False)
                                         if len(decisions) else "(none)"),
    })
