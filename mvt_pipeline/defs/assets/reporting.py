import datetime as dt

import dagster as dg
from dagster_duckdb import DuckDBResource

from ...config import settings
from ...registry import load_registry
from ...reports.experiment_report import ReportNight
from ...reports.publish import NightHistory, NightInputs, publish
from ...warehouse import store
from ..catalog import experiment_owners
from ..partitions import daily_partitions, night_of, one_night_per_run
from ..resources import WAREHOUSE_POOL


@one_night_per_run
@dg.asset(group_name="reporting", partitions_def=daily_partitions,
          deps=["factorial_effects", "experiment_decisions", "hte_effects", "stale_flag_audit"],
          pool=WAREHOUSE_POOL, kinds={"html"}, owners=experiment_owners())
def decision_reports(context: dg.AssetExecutionContext, duckdb: DuckDBResource) -> dg.MaterializeResult:
    """One self-contained HTML decision page per experiment plus an index, kept per night in
    `<reports>/<as_of>/` (the newest also in `latest/`), from the night's stored rows."""
    s = settings()
    registry = load_registry(s.registry_dir)
    as_of = night_of(context)
    with duckdb.get_connection() as conn:
        store.require_marts_for(conn, as_of)
        history = NightHistory(
            effects=store.nights_until(conn, "effects", as_of), guardrails=store.nights_until(conn, "guardrails", as_of),
            srm=store.nights_until(conn, "srm", as_of), decisions=store.nights_until(conn, "decisions", as_of),
            exposures=store.exposures_per_day(conn), source_quality=store.source_quality_daily(conn, as_of),
            source_contents=store.source_contents(conn), loss=store.daily_loss(conn))
        inputs = NightInputs(
            effects=store.night(conn, "effects", as_of), srm=store.night(conn, "srm", as_of),
            cells=store.report_cells(conn), assignment=store.assignment_summary(conn),
            stale_flags=store.night(conn, "stale_flags", as_of), ingestion=store.ingestion_totals(conn, as_of),
            hte=store.night(conn, "hte", as_of), heterogeneity=store.night(conn, "hte_heterogeneity", as_of),
            bayes=store.night(conn, "cell_bayes", as_of), decisions=store.night(conn, "decisions", as_of),
            guardrails=store.night(conn, "guardrails", as_of), burn=store.night(conn, "budget_burn", as_of),
            cell_stats=store.cell_stats(conn, overall=True), cell_quantiles=store.cell_quantiles(conn),
            history=history)
    night = ReportNight(as_of=as_of, generated_at=dt.datetime.now(dt.timezone.utc), run_id=context.run.run_id,
                        dagster_base_url=s.alerts.dagster_base_url)
    published = publish(s.reports_dir, registry, inputs, night)
    decisions = inputs.decisions
    context.log.info(f"{len(published.pages)} pages written to {published.night_dir}"
                     + (" (also latest/)" if published.latest else " (an older night: latest/ unchanged)"))
    return dg.MaterializeResult(metadata={
        "index": dg.MetadataValue.path(str(published.night_dir / "index.html")),
        "nights_index": dg.MetadataValue.path(str(s.reports_dir / "index.html")),
        "reports": len(published.pages) - 1,
        "latest": published.latest,
        "decisions": dg.MetadataValue.md(decisions[["experiment_id", "decision"]].to_markdown(index=False)
                                         if len(decisions) else "(none)"),
    })
