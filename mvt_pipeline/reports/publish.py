"""A night's decision pages: render each experiment's page and the night's index from the stored
rows (`analysis.decisions`, `analysis.effects`, `analysis.guardrails`, ...), so a page, the index,
an alert and the Dagster metadata show the same numbers, then publish them as a kept night.

Why here and not in the asset: it is pure (frames in, pages out) and testable without Dagster.
`night_files.publish_night` swaps the whole night into place, so a reader never sees a mix.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..analysis.decision_night import decision_from_row
from ..registry import Registry
from .experiment_report import ExperimentHistory, ReportNight, render_experiment_report
from .index_page import render_index, render_nights_index
from .night_files import PublishedNight, publish_night


@dataclass
class NightHistory:
    """Every kept night up to this one (the time series) and the per-day telemetry quality."""

    effects: pd.DataFrame | None = None
    guardrails: pd.DataFrame | None = None
    srm: pd.DataFrame | None = None
    decisions: pd.DataFrame | None = None
    exposures: pd.DataFrame | None = None  # experiment_id, cell_id, day, units
    source_quality: pd.DataFrame | None = None  # day, source, n_lines, n_quarantined, reasons, ...
    source_contents: pd.DataFrame | None = None  # source, event_type, experiment_id, metric
    loss: pd.DataFrame | None = None  # per day: sequenced events, lost, loss rate (all sources)


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
    burn: pd.DataFrame | None = None  # the night's analysis.budget_burn rows
    cell_stats: pd.DataFrame | None = None  # overall agg_cell_stats rows (cell estimates, interaction plot)
    cell_quantiles: pd.DataFrame | None = None
    history: NightHistory = field(default_factory=NightHistory)


def _srm_dict(row: pd.Series | None) -> dict | None:
    if row is None or pd.isna(row.get("p_value")):
        return None
    margins = row.get("margin_p_values")
    return {"chi2": row["chi2"], "df": row["df"], "p_value": row["p_value"], "passed": bool(row["passed"]),
            "observed": json.loads(row["observed"]), "expected_share": json.loads(row["expected_share"]),
            "margin_p_values": json.loads(margins) if isinstance(margins, str) and margins else {}}


def _of(frame: pd.DataFrame | None, exp_id: str) -> pd.DataFrame | None:
    if frame is None or "experiment_id" not in frame:
        return frame
    return frame[frame["experiment_id"] == exp_id]


def experiment_sources(contents: pd.DataFrame | None, registry: Registry, exp) -> list[str]:
    """The dump sources that carry this experiment's exposures or its metrics' events."""
    if contents is None or contents.empty:
        return []
    events = {registry.metric(m).event_source for m, _ in exp.metrics.by_role()}
    mine = contents[(contents["experiment_id"] == exp.id) | contents["metric"].isin(events)]
    return sorted(set(mine["source"].astype(str)))


def render_night(registry: Registry, inputs: NightInputs, night: ReportNight) -> dict[str, str]:
    """{file name: html} for every non-draft experiment and the night's index."""
    metrics = {m.name: m for m in registry.metrics}
    effects, cells, history = inputs.effects, inputs.cells, inputs.history
    pages: dict[str, str] = {}
    entries = []
    stored = inputs.decisions if inputs.decisions is not None else pd.DataFrame(columns=["experiment_id"])
    rows = {r["experiment_id"]: r for r in stored.to_dict("records")}
    for exp in registry.experiments:
        if exp.status == "draft":
            continue
        exp_cells = cells[cells["experiment_id"] == exp.id]
        srm_rows = inputs.srm[inputs.srm["experiment_id"] == exp.id]
        srm_info = _srm_dict(srm_rows.iloc[0]) if not srm_rows.empty else None
        row = rows.get(exp.id)
        decision = decision_from_row(row) if row is not None else {"label": "no decision tonight", "reasons": []}
        quality = {"rows read (days up to this night)": inputs.ingestion["rows_read"],
                   "rows quarantined": inputs.ingestion["rows_quarantined"],
                   "PII values redacted": inputs.ingestion["pii_redactions"]}
        if exp.id in inputs.assignment.index:
            quality.update({f"units {k}": int(v) for k, v in inputs.assignment.loc[exp.id].items()})
        sources = experiment_sources(history.source_contents, registry, exp)
        sq = history.source_quality
        exp_history = ExperimentHistory(
            effects=_of(history.effects, exp.id), guardrails=_of(history.guardrails, exp.id),
            srm=_of(history.srm, exp.id), exposures=_of(history.exposures, exp.id),
            source_quality=None if sq is None else sq[sq["source"].isin(sources)], sources=sources,
            cell_stats=_of(inputs.cell_stats, exp.id), cell_quantiles=_of(inputs.cell_quantiles, exp.id),
            burn=_of(inputs.burn, exp.id), loss=history.loss)
        name = f"{exp.id}.html"
        pages[name] = render_experiment_report(
            exp, metrics, _of(effects, exp.id), exp_cells[["cell_id", "metric", "n", "mean"]], srm_info, decision,
            quality, night.generated_at, hte=inputs.hte, heterogeneity=inputs.heterogeneity, bayes=inputs.bayes,
            guardrails=_of(inputs.guardrails, exp.id), night=night, history=exp_history)
        entries.append({"experiment_id": exp.id, "status": exp.status, "decision_label": decision["label"],
                        "report_file": name, "primary_metric": exp.metrics.primary[0], "decision": decision,
                        "metric": metrics.get(exp.metrics.primary[0])})
    pages["index.html"] = render_index(entries, night.generated_at, inputs.stale_flags, night=night)
    return pages


def publish_pages(reports_dir: Path, pages: dict[str, str], inputs: NightInputs, night: ReportNight) -> PublishedNight:
    """Put the rendered night in place (renamed, the index last), then the index of every kept night."""
    decisions = inputs.history.decisions
    return publish_night(Path(reports_dir), night.as_of, pages,
                         root_index=lambda nights: render_nights_index(nights, decisions, night.generated_at))

