import datetime as dt
import json

import dagster as dg
import pandas as pd
from dagster_duckdb import DuckDBResource

from ...analysis.decisions import decide
from ...config import settings
from ...registry import load_registry
from ...reports import render_experiment_report, render_index
from ..resources import WAREHOUSE_POOL
from .warehouse_io import as_of_date, replace_rows


def _srm_dict(row: pd.Series | None) -> dict | None:
    if row is None or pd.isna(row.get("p_value")):
        return None
    return {"chi2": row["chi2"], "df": row["df"], "p_value": row["p_value"], "passed": bool(row["passed"]),
            "observed": json.loads(row["observed"]), "expected_share": json.loads(row["expected_share"])}


def _night(conn, table: str, as_of) -> pd.DataFrame | None:
    """One night of an optional analysis table; None when it was never written."""
    exists = conn.execute("select count(*) from information_schema.tables where table_schema = 'analysis'"
                          " and table_name = ?", [table]).fetchone()[0]
    if not exists:
        return None
    return conn.execute(f'select * from analysis."{table}" where as_of = ?', [as_of]).df()


@dg.asset(group_name="reporting", deps=["factorial_effects", "hte_effects", "stale_flag_audit"],
          pool=WAREHOUSE_POOL, kinds={"html"})
def decision_reports(context: dg.AssetExecutionContext, duckdb: DuckDBResource) -> dg.MaterializeResult:
    """One self-contained HTML decision page per experiment plus an index; decisions also land in
    `analysis.decisions`."""
    s = settings()
    registry = load_registry(s.registry_dir)
    as_of = as_of_date(context)
    with duckdb.get_connection() as conn:
        effects = conn.execute("select * from analysis.effects where as_of = ?", [as_of]).df()
        srm = conn.execute("select * from analysis.srm where as_of = ?", [as_of]).df()
        cells = conn.execute(
            "select experiment_id, cell_id, metric, n, case when n > 0 then sum / n end as mean,"
            " n_units, num_sum, den_sum from marts.agg_cell_stats where segment = 'overall'"
        ).df()
        dq = conn.execute(
            "select experiment_id, sum(n_exposed) exposed, sum(n_bots) bots, sum(n_flipped) flipped,"
            " sum(n_incomplete) incomplete, sum(n_analysable) analysable from marts.dq_assignment group by 1"
        ).df().set_index("experiment_id")
        flags = conn.execute("select * from analysis.stale_flags where as_of = ?", [as_of]).df()
        hte = _night(conn, "hte", as_of)
        heterogeneity = _night(conn, "hte_heterogeneity", as_of)
        bayes = _night(conn, "cell_bayes", as_of)
        ingest = conn.execute(
            "select sum(rows_read), sum(rows_accepted), sum(rows_quarantined), sum(pii_redactions) from raw.ingest_log"
        ).fetchone()
        # Ratio metrics have no per-unit mean: show the cell ratio instead.
        ratio = cells["mean"].isna() & (cells["den_sum"] > 0)
        cells.loc[ratio, "mean"] = cells.loc[ratio, "num_sum"] / cells.loc[ratio, "den_sum"]
        cells["n"] = cells["n"].where(~ratio, cells["n_units"])

        out_dir = s.reports_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        generated_at = dt.datetime.now(dt.timezone.utc)
        metrics = {m.name: m for m in registry.metrics}
        entries, decisions = [], []
        for exp in registry.experiments:
            if exp.status == "draft":
                continue
            exp_effects = effects[effects["experiment_id"] == exp.id]
            exp_cells = cells[cells["experiment_id"] == exp.id]
            srm_rows = srm[srm["experiment_id"] == exp.id]
            srm_info = _srm_dict(srm_rows.iloc[0]) if not srm_rows.empty else None
            primary = exp.metrics.primary[0]
            primary_cells = exp_cells[exp_cells["metric"] == primary]
            min_cell = int(primary_cells["n"].min()) if not primary_cells.empty else 0
            decision = decide(exp, registry, exp_effects, srm_info, min_cell, as_of)
            quality = {"rows read (all days)": ingest[0], "rows quarantined": ingest[2],
                       "PII values redacted": ingest[3]}
            if exp.id in dq.index:
                quality.update({f"units {k}": int(v) for k, v in dq.loc[exp.id].items()})
            html = render_experiment_report(
                exp, metrics, exp_effects, exp_cells[["cell_id", "metric", "n", "mean"]], srm_info,
                decision, quality, generated_at, hte=hte, heterogeneity=heterogeneity, bayes=bayes)
            name = f"{exp.id}.html"
            (out_dir / name).write_text(html, encoding="utf-8")
            top = exp_effects[(exp_effects["metric"] == primary) & (exp_effects["status"] == "ok")]
            top_text = ""
            if not top.empty:
                best = top.sort_values("p_value").iloc[0]
                top_text = f"{best['term']}={best['level']}: {best['estimate']:+.4g} (q={best['q_value']:.2g})"
            entries.append({"experiment_id": exp.id, "status": exp.status, "decision_label": decision["label"],
                            "report_file": name, "primary_metric": primary, "top_effect_text": top_text})
            decisions.append({"experiment_id": exp.id, "decision": decision["label"],
                              "reasons": json.dumps(decision["reasons"]), "report_path": str(out_dir / name)})
        (out_dir / "index.html").write_text(render_index(entries, generated_at, flags), encoding="utf-8")
        replace_rows(conn, "decisions", pd.DataFrame(decisions), as_of)
    context.log.info(f"reports written to {out_dir}")
    return dg.MaterializeResult(metadata={
        "index": dg.MetadataValue.path(str(out_dir / "index.html")),
        "reports": len(entries),
        "decisions": dg.MetadataValue.md(pd.DataFrame(decisions)[["experiment_id", "decision"]]
                                         .to_markdown(index=False) if decisions else "(none)"),
    })
