"""One experiment's decision report as a single self-contained HTML page.

The report is what a product owner reads to act, so it leads with the decision and the SRM verdict
(an SRM invalidates every number below it), then the effects per metric (primary first) as a table
and a forest plot (effects_section.py), the optional Bayesian "which cell is best" read-out
(best_cell_section.py) and effects by segment (segments_section.py), then the raw cell means and the
data-quality figures that back them. Sections live in their own modules so each stays readable; this
one assembles them and owns the page's fixed parts. Every string
that comes from the registry, the data or the decision is escaped; missing numbers read as a dash and
effects that could not be estimated are shown with their reason rather than silently dropped.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pandas as pd

from mvt_pipeline.registry.models import Experiment, Metric

from .best_cell_section import best_cell_section
from .decision_view import decision_view, worst_status
from .diagnostics_view import assignment_text, cuped_text, source_quality_table, srm_margins
from .effects_section import effects_section, metric_kind
from .formatting import esc, finite, fmt_count, fmt_free, fmt_level, fmt_number, fmt_p, fmt_percent, is_share_scale
from .guardrails_section import burn_section, guardrails_section, run_links, turn_off_text
from .page import decision_tone, fmt_timestamp, page
from .segments_section import (
    HETEROGENEITY_OPTIONAL, HETEROGENEITY_REQUIRED, HTE_OPTIONAL, HTE_REQUIRED, prepare, segments_section,
)
from .trends import (
    cell_values, cumulative_effect_plot, exposures_plot, guardrail_plots, interaction_plot, srm_plot, value_label,
)


@dataclass(frozen=True)
class ReportNight:
    """Which night a page shows and where it came from (stated on every page)."""

    as_of: dt.date
    generated_at: dt.datetime
    run_id: str | None = None
    dagster_base_url: str | None = None

    @property
    def run_url(self) -> str | None:
        return f"{self.dagster_base_url.rstrip('/')}/runs/{self.run_id}" if self.dagster_base_url and self.run_id else None

    @property
    def check_url(self) -> str | None:
        base = self.dagster_base_url
        return f"{base.rstrip('/')}/assets/experiment_decisions?view=checks" if base else None


@dataclass
class ExperimentHistory:
    """One experiment's kept nights and per-day rows (the time series and the diagnostics)."""

    effects: pd.DataFrame | None = None
    guardrails: pd.DataFrame | None = None
    srm: pd.DataFrame | None = None
    exposures: pd.DataFrame | None = None
    source_quality: pd.DataFrame | None = None
    sources: tuple | list = ()
    loss: pd.DataFrame | None = None
    cell_stats: pd.DataFrame | None = None
    cell_quantiles: pd.DataFrame | None = None
    burn: pd.DataFrame | None = None

EFFECT_COLUMNS = [
    "experiment_id", "metric", "metric_role", "term", "level", "aliases", "estimate", "std_error", "ci_low",
    "ci_high", "p_value", "q_value", "control_mean", "rel_lift", "rel_ci_low", "rel_ci_high", "n_units", "status",
]
# Newer, optional effect columns (always-valid CIs, CUPED, metric kind); absent ones read as missing.
OPTIONAL_EFFECT_COLUMNS = [
    "metric_kind", "seq_ci_low", "seq_ci_high", "seq_p_value", "seq_q_value", "n_star", "se_type", "cuped",
    "variance_reduction", "pre_imbalance_p", "shrunk_estimate", "shrink_factor",
]
CELL_COLUMNS = ["cell_id", "metric", "n", "mean"]

ESTIMANDS = [
    "<b>Main effect</b>: the difference between the marginal mean of a level and that of the factor's control "
    "level, averaged over the levels of the other factors.",
    "<b>Interaction</b> (a:b): a difference of differences: how much the effect of one factor changes with the "
    "level of the other, beyond the sum of the two main effects.",
    "<b>EB</b> (under an interaction's estimate): the empirical-Bayes estimate, shrunk towards 0 with the "
    "other interactions of the metric (a normal prior fitted to all of them, moved at most one standard error), "
    "which corrects the winner's curse among many small interactions.",
    "<b>Relative lift</b>: the effect divided by the control mean; its interval uses the delta method and "
    "includes the control mean's own uncertainty.",
    "<b>q-value</b>: Benjamini\u2013Hochberg false-discovery-rate adjusted p-value across the effects in the "
    "correction family; significance (\u2605) uses q when present, else p, against the experiment's alpha, on "
    "the experiment's decision basis (always-valid by default).",
    "<b>Always-valid interval</b> (confidence sequence): covers the true effect at every nightly look at "
    "once, so it may be read every night and the experiment stopped the first night it excludes 0; it is "
    "wider than the fixed-horizon interval, which is valid only when read once, at the planned end. N* is "
    "the planned number of units, where the always-valid interval is tightest.",
    "<b>CUPED</b>: the effect is adjusted for each unit's pre-period value of the metric, which removes "
    "noise (the variance reduction shown), not signal; a pre-period imbalance means the cells differed "
    "before exposure.",
    "<b>SRM</b> (sample ratio mismatch): a chi-square test of the observed units per cell against the planned "
    "allocation; a failure means assignment or logging is broken and the effects are not trustworthy.",
    "Binary metrics and rate-like ratio metrics (all values between 0 and 1) are shown as percentages; their "
    "effects in percentage points (pp). Quantile metrics (e.g. P95 latency) show differences of the quantile "
    "in the metric's own unit.",
]


def _check_columns(frame: pd.DataFrame | None, required: list[str], name: str) -> pd.DataFrame:
    if frame is None or (frame.empty and len(frame.columns) == 0):
        return pd.DataFrame(columns=required)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} is missing column(s): {', '.join(missing)}")
    return frame


def _night_line(exp: Experiment, generated_at: dt.datetime, night: ReportNight | None) -> str:
    if night is None:
        return f"<div class=\"muted small\">Report generated {fmt_timestamp(generated_at)}</div>"
    return (f"<div class=\"night\"><b>Night {esc(night.as_of.isoformat())}</b> \u00b7 data "
            f"{esc(exp.start_date.isoformat())} \u2192 {esc(night.as_of.isoformat())} (dumps up to that day) "
            f"\u00b7 generated {fmt_timestamp(night.generated_at)}</div>")


def _header(exp: Experiment, generated_at: dt.datetime, night: ReportNight | None = None) -> str:
    dates = f"{esc(exp.start_date.isoformat())} \u2192 {esc(exp.end_date.isoformat()) if exp.end_date else 'open'}"
    design = esc(exp.design.type) + (f" ({esc(', '.join(exp.design.generators))})" if exp.design.generators else "")
    rows = [("Owner", esc(exp.owner)), ("Status", esc(exp.status)), ("Dates", dates), ("Unit", esc(exp.unit)),
            ("Design", design), ("Alpha", fmt_number(exp.alpha)), ("Hypothesis", esc(exp.hypothesis))]
    meta = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    factors = "".join(
        f"<tr><td>{esc(f.name)}</td><td>{esc(f.control)}</td>"
        f"<td>{esc(', '.join(lv for lv in f.levels if lv != f.control))}</td><td>{esc(f.flag_key)}</td></tr>"
        for f in exp.factors
    )
    return (
        f"<header><h1>Experiment {esc(exp.id)}</h1>{_night_line(exp, generated_at, night)}"
        f"<dl class=\"meta\">{meta}</dl>"
        "<table class=\"factors\"><thead><tr><th>Factor</th><th>Control level</th><th>Other levels</th>"
        f"<th>Flag key</th></tr></thead><tbody>{factors}</tbody></table></header>"
    )


def _srm(srm: dict | None) -> str:
    if not srm:
        return "<section><h3>Sample ratio</h3><p class=\"muted\">SRM check not available.</p></section>"
    passed = bool(srm.get("passed"))
    verdict = ("<span class=\"srm pass\">No sample ratio mismatch</span>" if passed
               else "<span class=\"srm fail\">Sample ratio mismatch: effects below are not trustworthy</span>")
    stats = (f"\u03c7\u00b2 = {fmt_number(srm.get('chi2'))}, df = {fmt_count(srm.get('df'))}, "
             f"p = {fmt_p(srm.get('p_value'))}")
    observed: dict = srm.get("observed") or {}
    shares: dict = srm.get("expected_share") or {}
    total = sum(v for v in (finite(n) for n in observed.values()) if v is not None)
    rows = []
    for cell in list(observed) + [c for c in shares if c not in observed]:
        n, share = finite(observed.get(cell)), finite(shares.get(cell))
        expected = share * total if share is not None and total else None
        rows.append(f"<tr><td>{esc(_cell_label(str(cell)))}</td><td class=\"num\">{fmt_count(n)}</td>"
                    f"<td class=\"num\">{fmt_count(round(expected) if expected is not None else None)}</td>"
                    f"<td class=\"num\">{fmt_percent(n / total if n is not None and total else None)}</td>"
                    f"<td class=\"num\">{fmt_percent(share)}</td></tr>")
    table = ("<table><thead><tr><th>Cell</th><th>Observed units</th><th>Expected units</th><th>Observed share</th>"
             f"<th>Planned share</th></tr></thead><tbody>{''.join(rows)}</tbody></table>") if rows else ""
    return f"<section><h3>Sample ratio</h3><p>{verdict} ({stats})</p>{table}</section>"


def _cell_label(cell_id: str) -> str:
    return " \u00b7 ".join(part for part in cell_id.split("|"))


def _cell_sort_key(exp: Experiment, cell_id: str) -> tuple:
    levels = dict(part.split("=", 1) for part in cell_id.split("|") if "=" in part)
    key = []
    for factor in exp.factors:
        level = levels.get(factor.name)
        key.append(factor.levels.index(level) if level in factor.levels else len(factor.levels))
    return (*key, cell_id)


def _cell_rows(exp: Experiment, metrics: dict[str, Metric], cells: pd.DataFrame,
               history: ExperimentHistory | None) -> tuple[pd.DataFrame, dict[str, str]]:
    """cell_id, metric, n, mean per cell and what each metric's value is: the engine's cell
    estimates (a quantile's P95, a ratio's ratio) when the cell statistics are given, else `cells`."""
    labels = {}
    if history is not None and (history.cell_stats is not None or history.cell_quantiles is not None):
        frames = []
        for name, _role in exp.metrics.by_role():
            metric = metrics.get(name)
            if metric is None:
                continue
            v = cell_values(exp, metric, history.cell_stats, history.cell_quantiles)
            frames.append(pd.DataFrame({"cell_id": v["cell_id"], "metric": name, "n": v["n"], "mean": v["value"]}))
            labels[name] = value_label(metric, name)
        frames = [f for f in frames if not f.empty]
        if frames:
            return pd.concat(frames, ignore_index=True), labels
    for name in cells["metric"].astype(str).unique() if len(cells) else []:
        metric = metrics.get(name)
        labels[name] = value_label(metric, name) if metric is not None and metric.kind != "quantile" else "mean"
    return cells, labels


def _cells(exp: Experiment, shares: dict[str, bool], cells: pd.DataFrame, labels: dict[str, str] | None = None) -> str:
    labels = labels or {}
    if cells.empty:
        return "<section><h3>Cells</h3><p class=\"muted\">No cell statistics.</p></section>"
    cells = cells.assign(cell_id=cells["cell_id"].astype(str), metric=cells["metric"].astype(str))
    names = list(dict.fromkeys(cells["metric"]))
    declared = [m for m, _ in exp.metrics.by_role()]
    names.sort(key=lambda m: (declared.index(m) if m in declared else len(declared), m))
    ids = sorted(set(cells["cell_id"]), key=lambda c: _cell_sort_key(exp, c))
    control = "|".join(f"{f.name}={f.control}" for f in exp.factors)
    lookup = {(r.cell_id, r.metric): (r.n, r.mean) for r in cells.itertuples(index=False)}
    one_n = all(cells.groupby("cell_id")["n"].nunique(dropna=False) <= 1)
    head = ["Cell"] + (["Units"] if one_n else []) + [
        f"{esc(m)} {esc(labels.get(m, 'mean'))}" + ("" if one_n else " (n)") for m in names]
    body = []
    for cell in ids:
        is_control = sorted(cell.split("|")) == sorted(control.split("|"))
        mark = ' <span class="muted small">(control)</span>' if is_control else ""
        tds = [f"<td>{esc(_cell_label(cell))}{mark}</td>"]
        if one_n:
            n = next((lookup[(cell, m)][0] for m in names if (cell, m) in lookup), None)
            tds.append(f"<td class=\"num\">{fmt_count(n)}</td>")
        for m in names:
            n, mean = lookup.get((cell, m), (None, None))
            text = fmt_level(mean, shares.get(m, False)) + ("" if one_n else f" ({fmt_count(n)})")
            tds.append(f"<td class=\"num\">{text}</td>")
        body.append(f"<tr>{''.join(tds)}</tr>")
    thead = "".join(f"<th>{h}</th>" for h in head)
    return (f"<section><h3>Cells</h3><div class=\"wide\"><table class=\"cells\"><thead><tr>{thead}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div></section>")


def _view(anchor: str, title: str, parts: list[str]) -> str:
    return f"<section class=\"view\" id=\"{anchor}\"><h2>{esc(title)}</h2>{''.join(p for p in parts if p)}</section>"


def _nav() -> str:
    """Links to the three views (anchors: no script needed)."""
    return ("<nav class=\"views\"><a href=\"#decision\">Decision</a> \u00b7 <a href=\"#guardrails\">Guardrails</a>"
            " \u00b7 <a href=\"#diagnostics\">Diagnostics</a></nav>")


def _quality(quality: dict | None) -> str:
    if not quality:
        return "<section><h3>Data quality</h3><p class=\"muted\">No data-quality summary.</p></section>"
    rows = "".join(f"<tr><td>{esc(k)}</td><td class=\"num\">{fmt_free(v)}</td></tr>" for k, v in quality.items())
    return (f"<section><h3>Data quality</h3><table class=\"quality\"><tbody>{rows}</tbody></table></section>")


def _footer(exp: Experiment) -> str:
    items = "".join(f"<li>{text}</li>" for text in ESTIMANDS)
    return (f"<footer><h2>How to read this report</h2><ul>{items}</ul>"
            f"<p class=\"small\">Intervals are at the {fmt_number(100 * (1 - exp.alpha))}% level (alpha "
            f"{fmt_number(exp.alpha)}). Effects are estimated only with at least "
            f"{fmt_count(exp.min_units_per_cell)} units per cell.</p></footer>")


def _shares(metrics: dict[str, Metric], effects: pd.DataFrame, cells: pd.DataFrame) -> dict[str, bool]:
    """Per metric: read as a share (% and pp)? Binary always; a ratio when all its levels are in [0, 1]."""
    out = {}
    for name in dict.fromkeys([*metrics, *effects["metric"].astype(str), *cells["metric"].astype(str)]):
        rows = effects[effects["metric"].astype(str) == name]
        levels = [*rows["control_mean"], *cells.loc[cells["metric"].astype(str) == name, "mean"]]
        out[name] = is_share_scale(metric_kind(name, metrics.get(name), rows), levels)
    return out


def render_experiment_report(
    experiment: Experiment,
    metrics: dict[str, Metric],
    effects: pd.DataFrame,
    cells: pd.DataFrame,
    srm: dict | None,
    decision: dict,
    quality: dict | None,
    generated_at: dt.datetime,
    *,
    hte: pd.DataFrame | None = None,
    heterogeneity: pd.DataFrame | None = None,
    bayes: pd.DataFrame | None = None,
    guardrails: pd.DataFrame | None = None,
    night: ReportNight | None = None,
    history: ExperimentHistory | None = None,
) -> str:
    """The full HTML document (str) for one experiment; pure: writes nothing.

    `effects` needs EFFECT_COLUMNS; OPTIONAL_EFFECT_COLUMNS add the always-valid intervals and the
    CUPED notes. The keyword-only frames add sections and are omitted when None: `hte` and
    `heterogeneity` (the `hte_effects` tables) the "Effects by segment" section, `bayes` (per cell
    posterior_mean, prob_best, expected_loss) the "Which cell is best" table for the primary metric.
    """
    effects = _check_columns(effects, EFFECT_COLUMNS, "effects")
    cells = _check_columns(cells, CELL_COLUMNS, "cells")
    if len(effects) and "experiment_id" in effects:
        effects = effects[effects["experiment_id"].isna() | (effects["experiment_id"].astype(str) == experiment.id)]
    hte = prepare(hte, HTE_REQUIRED, HTE_OPTIONAL, "hte", experiment.id)
    heterogeneity = prepare(heterogeneity, HETEROGENEITY_REQUIRED, HETEROGENEITY_OPTIONAL, "heterogeneity",
                            experiment.id)
    history = history or ExperimentHistory()
    cells, labels = _cell_rows(experiment, metrics, cells, history)
    shares = _shares(metrics, effects, cells)
    primary = experiment.metrics.primary[0] if experiment.metrics.primary else None
    primary_metric = metrics.get(primary) if primary else None
    evidence = [effects_section(experiment, metrics, effects, shares)]
    if primary_metric is not None:
        evidence.append(interaction_plot(experiment, primary_metric, shares.get(primary, False), history.cell_stats,
                                         history.cell_quantiles))
        evidence.append(cumulative_effect_plot(experiment, primary_metric, primary, shares.get(primary, False),
                                               history.effects))
    views = [
        _view("decision", "Decision", [
            decision_view(experiment, metrics, decision, shares, worst_status(guardrails)), *evidence,
            best_cell_section(experiment, metrics, bayes, shares, guardrails),
            segments_section(experiment, hte, heterogeneity, shares)]),
        _view("guardrails", "Guardrails", [
            turn_off_text(decision), run_links(night.run_url if night else None, night.run_id if night else None,
                                               night.check_url if night else None),
            guardrails_section(guardrails) or "<p class=\"muted\">No guardrail rows tonight.</p>",
            burn_section(history.burn), guardrail_plots(experiment, metrics, shares, history.guardrails)]),
        _view("diagnostics", "Diagnostics", [
            _srm(srm), srm_margins(srm), srm_plot(history.srm), assignment_text(quality), cuped_text(effects),
            exposures_plot(experiment, history.exposures),
            source_quality_table(history.source_quality, list(history.sources), history.loss)
            if history.source_quality is not None else "",
            _cells(experiment, shares, cells, labels), _quality(quality)]),
    ]
    body = "".join([_header(experiment, generated_at, night), _nav(), *views, _footer(experiment)])
    return page(f"Experiment {experiment.id}: {(decision or {}).get('label') or 'no decision'}", body)
