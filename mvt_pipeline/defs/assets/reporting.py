import datetime as dt

import dagster as dg
from dagster_duckdb import DuckDBResource

from ...config import settings
from ...registry import load_registry
from ...reports.experiment_report import ReportNight
from ...reports.publish import NightHistory, NightInputs, publish_pages, render_night
from ...warehouse import store
from ..catalog import experiment_owners
from ..night_scope import stage_key
from ..partitions import daily_partitions, night_of, one_night_per_run
from ..resources import WAREHOUSE_POOL


@one_night_per_run
@dg.asset(group_name="reporting", partitions_def=daily_partitions,
          deps=["factorial_effects", "experiment_decisions", "hte_effects", "stale_flag_audit",
                "agg_cell_exposures_daily", "dq_source_daily", "dq_source_contents"],
          pool=WAREHOUSE_POOL, kinds={"html"}, owners=experiment_owners())
def decision_reports(context: dg.AssetExecutionContext, duckdb: DuckDBResource) -> dg.MaterializeResult:
    """One self-contained HTML decision page per experiment plus an index, kept per night in
    `<reports>/<as_of>/` (the newest also in `latest/`), from the night's staged rows; then the night
    is published: the analysis tables in one transaction, the pages renamed into place."""
    s = settings()
    registry = load_registry(s.registry_dir)
    as_of = night_of(context)
    key = stage_key(context)
    with duckdb.get_connection() as conn:
        store.require_marts_for(conn, as_of)
        history = NightHistory(
            effects=store.nights_until(conn, "effects", as_of, key),
            guardrails=store.nights_until(conn, "guardrails", as_of, key),
            srm=store.nights_until(conn, "srm", as_of, key), decisions=store.nights_until(conn, "decisions", as_of, key),
            exposures=store.exposures_per_day(conn), source_quality=store.source_quality_daily(conn, as_of),
            source_contents=store.source_contents(conn), loss=store.daily_loss(conn))
        inputs = NightInputs(
            effects=store.night(conn, "effects", as_of, key), srm=store.night(conn, "srm", as_of, key),
            cells=store.report_cells(conn), assignment=store.assignment_summary(conn),
            stale_flags=store.night(conn, "stale_flags", as_of, key), ingestion=store.ingestion_totals(conn, as_of),
            hte=store.night(conn, "hte", as_of, key), heterogeneity=store.night(conn, "hte_heterogeneity", as_of, key),
            bayes=store.night(conn, "cell_bayes", as_of, key), decisions=store.night(conn, "decisions", as_of, key),
            guardrails=store.night(conn, "guardrails", as_of, key), burn=store.night(conn, "budget_burn", as_of, key),
            cell_stats=store.cell_stats(conn, overall=True), cell_quantiles=store.cell_quantiles(conn),
            history=history)
        night = ReportNight(as_of=as_of, generated_at=dt.datetime.now(dt.timezone.utc), run_id=context.run.run_id,
                            dagster_base_url=s.alerts.dagster_base_url)
        pages = render_night(registry, inputs, night)
        tables = store.publish_night(conn, key, as_of) if key else {}
    published = publish_pages(s.reports_dir, pages, inputs, night)
    decisions = inputs.decisions
    context.log.info(f"night {as_of} published: {len(tables)} analysis tables"
                     + (f" ({', '.join(f'{n} {r}' for n, r in tables.items())} rows)" if tables else "")
                     + f", {len(published.pages)} pages in {published.night_dir}"
                     + (" (also latest/)" if published.latest else " (an older night: latest/ unchanged)"))
    return dg.MaterializeResult(metadata={
        "index": dg.MetadataValue.path(str(published.night_dir / "index.html")),
        "nights_index": dg.MetadataValue.path(str(s.reports_dir / "index.html")),
        "reports": len(published.pages) - 1,
        "latest": published.latest,
        "published_tables": dg.MetadataValue.json(tables),
        "decisions": dg.MetadataValue.md(decisions[["experiment_id", "decision"]].to_markdown(index=False)
                                         if len(decisions) else "(none)"),
    })
