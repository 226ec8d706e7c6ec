"""A night's decision pages: render each experiment's page (its decision read from
`analysis.decisions`, so a page, the index and an alert show the same row) and the index, publish them.

Why here and not in the asset: it is pure (inputs in, pages and decision rows out) and testable
without Dagster. Pages are written to temporary names and renamed into place only when every page of
the night rendered, so a reader never sees a truncated page or an index from another night.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..analysis.decision_night import decision_from_row
from ..registry import Registry
from .experiment_report import render_experiment_report
from .index_page import render_index


@dataclass
class NightInputs:
    """What the pages of one night are made of (all rows of that night)."""

    effects: pd.DataFrame
    srm: pd.DataFrame
    cells: pd.DataFrame  # experiment_id, cell_id, metric, n, mean
    assignment: pd.DataFrame  # per experiment_id: exposed, bots, flipped, incomplete, analysable
    stale_flags: pd.DataFrame
    ingestion: dict[str, int]
    hte: pd.DataFrame | None = None
    heterogeneity: pd.DataFrame | None = None
    bayes: pd.DataFrame | None = None
    decisions: pd.DataFrame | None = None  # the night's analysis.decisions rows
    guardrails: pd.DataFrame | None = None  # the night's analysis.guardrails rows


@dataclass
class Published:
    index: Path
    pages: list[Path] = field(default_factory=list)
    decisions: pd.DataFrame = field(default_factory=pd.DataFrame)


def _srm_dict(row: pd.Series | None) -> dict | None:
    if row is None or pd.isna(row.get("p_value")):
        return None
    return {"chi2": row["chi2"], "df": row["df"], "p_value": row["p_value"], "passed": bool(row["passed"]),
            "observed": json.loads(row["observed"]), "expected_share": json.loads(row["expected_share"])}


def render_night(registry: Registry, inputs: NightInputs, as_of: dt.date, out_dir: Path,
                 generated_at: dt.datetime | None = None) -> dict[str, str]:
    """{file name: html} for every non-draft experiment and the index."""
    generated_at = generated_at or dt.datetime.now(dt.timezone.utc)
    metrics = {m.name: m for m in registry.metrics}
    effects, cells = inputs.effects, inputs.cells
    pages: dict[str, str] = {}
    entries = []
    stored = inputs.decisions if inputs.decisions is not None else pd.DataFrame(columns=["experiment_id"])
    by_experiment = {r["experiment_id"]: decision_from_row(r) for r in stored.to_dict("records")}
    for exp in registry.experiments:
        if exp.status == "draft":
            continue
        exp_effects = effects[effects["experiment_id"] == exp.id]
        exp_cells = cells[cells["experiment_id"] == exp.id]
        srm_rows = inputs.srm[inputs.srm["experiment_id"] == exp.id]
        srm_info = _srm_dict(srm_rows.iloc[0]) if not srm_rows.empty else None
        primary = exp.metrics.primary[0]
        decision = by_experiment.get(exp.id) or {"label": "no decision tonight", "reasons": []}
        quality = {"rows read (days up to this night)": inputs.ingestion["rows_read"],
                   "rows quarantined": inputs.ingestion["rows_quarantined"],
                   "PII values redacted": inputs.ingestion["pii_redactions"]}
        if exp.id in inputs.assignment.index:
            quality.update({f"units {k}": int(v) for k, v in inputs.assignment.loc[exp.id].items()})
        name = f"{exp.id}.html"
        pages[name] = render_experiment_report(
            exp, metrics, exp_effects, exp_cells[["cell_id", "metric", "n", "mean"]], srm_info, decision,
            quality, generated_at, hte=inputs.hte, heterogeneity=inputs.heterogeneity, bayes=inputs.bayes,
            guardrails=None if inputs.guardrails is None else inputs.guardrails[
                inputs.guardrails["experiment_id"] == exp.id])
        top = exp_effects[(exp_effects["metric"] == primary) & (exp_effects["status"] == "ok")]
        top_text = ""
        if not top.empty:
            best = top.sort_values("p_value").iloc[0]
            top_text = f"{best['term']}={best['level']}: {best['estimate']:+.4g} (q={best['q_value']:.2g})"
        entries.append({"experiment_id": exp.id, "status": exp.status, "decision_label": decision["label"],
                        "report_file": name, "primary_metric": primary, "top_effect_text": top_text})
    pages["index.html"] = render_index(entries, generated_at, inputs.stale_flags)
    return pages


def write_pages(out_dir: Path, pages: dict[str, str]) -> list[Path]:
    """Write every page to a temporary name first, then rename them all into place (the index last)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    staged = []
    try:
        for name, html in pages.items():
            if Path(name).name != name or not name.endswith(".html"):
                raise ValueError(f"report name {name!r} is not a plain .html file name")
            tmp = out_dir / f".{name}.{os.getpid()}.tmp"
            tmp.write_text(html, encoding="utf-8")
            staged.append((tmp, out_dir / name))
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    staged.sort(key=lambda pair: pair[1].name == "index.html")  # the index last: it links to the rest
    for tmp, final in staged:
        os.replace(tmp, final)
    return [final for _, final in staged]
