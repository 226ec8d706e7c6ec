"""One experiment's decision report as a single self-contained HTML page.

The report is what a product owner reads to act, so it leads with the decision and the SRM verdict
(an SRM invalidates every number below it), then the effects per metric (primary first) as a table
and a forest plot, then the raw cell means and the data-quality figures that back them. Every string
that comes from the registry, the data or the decision is escaped; missing numbers read as a dash and
effects that could not be estimated are shown with their reason rather than silently dropped.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd

from mvt_pipeline.registry.models import Experiment, Metric

from .forest_plot import ForestRow, render_forest_plot
from .formatting import (
    DASH, esc, finite, fmt_count, fmt_effect, fmt_free, fmt_interval, fmt_level, fmt_number, fmt_p,
    fmt_percent,
)
from .page import decision_tone, fmt_timestamp, page

EFFECT_COLUMNS = [
    "experiment_id", "metric", "metric_role", "term", "level", "aliases", "estimate", "std_error", "ci_low",
    "ci_high", "p_value", "q_value", "control_mean", "rel_lift", "rel_ci_low", "rel_ci_high", "n_units", "status",
]
CELL_COLUMNS = ["cell_id", "metric", "n", "mean"]
ROLE_ORDER = {"primary": 0, "secondary": 1, "guardrail": 2}

ESTIMANDS = [
    "<b>Main effect</b>: the difference between the marginal mean of a level and that of the factor's control "
    "level, averaged over the levels of the other factors.",
    "<b>Interaction</b> (a:b): a difference of differences: how much the effect of one factor changes with the "
    "level of the other, beyond the sum of the two main effects.",
    "<b>Relative lift</b>: the effect divided by the control mean; its interval uses the delta method and "
    "includes the control mean's own uncertainty.",
    "<b>q-value</b>: Benjamini\u2013Hochberg false-discovery-rate adjusted p-value across the effects in the "
    "correction family; significance (\u2605) uses q when present, else p, against the experiment's alpha.",
    "<b>SRM</b> (sample ratio mismatch): a chi-square test of the observed units per cell against the planned "
    "allocation; a failure means assignment or logging is broken and the effects are not trustworthy.",
    "Binary metrics are shown as percentages; their effects in percentage points (pp).",
]


def _check_columns(frame: pd.DataFrame | None, required: list[str], name: str) -> pd.DataFrame:
    if frame is None or (frame.empty and len(frame.columns) == 0):
        return pd.DataFrame(columns=required)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} is missing column(s): {', '.join(missing)}")
    return frame


def _header(exp: Experiment, generated_at: dt.datetime) -> str:
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
        f"<header><h1>Experiment {esc(exp.id)}</h1>"
        f"<div class=\"muted small\">Report generated {fmt_timestamp(generated_at)}</div>"
        f"<dl class=\"meta\">{meta}</dl>"
        "<table class=\"factors\"><thead><tr><th>Factor</th><th>Control level</th><th>Other levels</th>"
        f"<th>Flag key</th></tr></thead><tbody>{factors}</tbody></table></header>"
    )


def _decision(decision: dict | None) -> str:
    decision = decision or {}
    label = decision.get("label") or "no decision"
    reasons = [r for r in (decision.get("reasons") or []) if r is not None]
    items = "".join(f"<li>{esc(r)}</li>" for r in reasons)
    return (
        f"<section class=\"decision {decision_tone(label)}\" aria-label=\"decision\">"
        f"<div class=\"muted small\">Decision</div><div class=\"label\">{esc(label)}</div>"
        + (f"<ul>{items}</ul>" if items else "")
        + "</section>"
    )


def _srm(srm: dict | None) -> str:
    if not srm:
        return "<section><h2>Sample ratio</h2><p class=\"muted\">SRM check not available.</p></section>"
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
    return f"<section><h2>Sample ratio</h2><p>{verdict} ({stats})</p>{table}</section>"


def _cell_label(cell_id: str) -> str:
    return " \u00b7 ".join(part for part in cell_id.split("|"))


def _contrast(exp: Experiment, term: Any, level: Any) -> str:
    """'green vs blue' for a main effect; 'green \u00d7 inline' for an interaction (raw text)."""
    factors, levels = str(term).split(":"), str(level).split(":")
    if len(factors) == 1:
        try:
            return f"{level} vs {exp.factor(factors[0]).control}"
        except KeyError:
            return str(level)
    return " \u00d7 ".join(levels)


def _metric_order(exp: Experiment, effects: pd.DataFrame) -> list[tuple[str, str]]:
    roles = dict((m, r) for m, r in reversed(exp.metrics.by_role()))
    declared = [m for m, _ in exp.metrics.by_role()]
    names = list(dict.fromkeys(effects["metric"].astype(str)))
    for name in names:
        if name not in roles:
            given = effects.loc[effects["metric"].astype(str) == name, "metric_role"].dropna()
            roles[name] = str(given.iloc[0]) if len(given) else "other"
    def key(name: str) -> tuple:
        return (ROLE_ORDER.get(roles[name], 3), declared.index(name) if name in declared else len(declared), name)
    return [(name, roles[name]) for name in sorted(names, key=key)]


def _significance(row: Any, alpha: float) -> bool:
    q, p = finite(row.q_value), finite(row.p_value)
    judged = q if q is not None else p
    return judged is not None and judged < alpha


def _tone(row: Any, metric: Metric | None, significant: bool) -> str:
    estimate = finite(row.estimate)
    if not significant or estimate is None or estimate == 0:
        return "neutral"
    better = estimate > 0 if (metric is None or metric.direction == "higher") else estimate < 0
    return "good" if better else "bad"


def _metric_section(exp: Experiment, name: str, role: str, metric: Metric | None, rows: pd.DataFrame) -> str:
    is_binary = metric is not None and metric.kind == "binary"
    ci_label = f"{fmt_number(100 * (1 - exp.alpha))}% CI"
    rows = rows.assign(_order=rows["term"].astype(str).str.count(":")).sort_values("_order", kind="stable")
    has_aliases = rows["aliases"].dropna().astype(str).str.strip().ne("").any()
    head = ["Effect", "Contrast", "Estimate", ci_label, "Control mean", "Relative lift", f"Lift {ci_label}",
            "p", "q", "Units", "Sig."] + (["Aliased with"] if has_aliases else [])
    body, plot_rows = [], []
    for row in rows.itertuples(index=False):
        contrast = _contrast(exp, row.term, row.level)
        label = f"{row.term}: {contrast}"
        alias_td = f"<td>{esc(row.aliases) if not pd.isna(row.aliases) else ''}</td>" if has_aliases else ""
        status = "ok" if pd.isna(row.status) else str(row.status)
        if status != "ok":
            body.append(f"<tr class=\"unavailable\"><td>{esc(row.term)}</td><td>{esc(contrast)}</td>"
                        f"<td colspan=\"9\">not estimated: {esc(status)}</td>{alias_td}</tr>")
            plot_rows.append(ForestRow(label, None, None, None, f"{DASH} ({esc(status)})"))
            continue
        significant = _significance(row, exp.alpha)
        tone = _tone(row, metric, significant)
        marker = "<span title=\"significant\">\u2605</span>" if significant else ""
        effect_fmt = lambda v: fmt_effect(v, is_binary)  # noqa: E731
        lift_fmt = lambda v: fmt_percent(v, signed=True)  # noqa: E731
        body.append(
            f"<tr class=\"{tone}\"><td>{esc(row.term)}</td><td>{esc(contrast)}</td>"
            f"<td class=\"num\">{effect_fmt(row.estimate)}</td>"
            f"<td class=\"num\">{fmt_interval(row.ci_low, row.ci_high, effect_fmt)}</td>"
            f"<td class=\"num\">{fmt_level(row.control_mean, is_binary)}</td>"
            f"<td class=\"num\">{lift_fmt(row.rel_lift)}</td>"
            f"<td class=\"num\">{fmt_interval(row.rel_ci_low, row.rel_ci_high, lift_fmt)}</td>"
            f"<td class=\"num\">{fmt_p(row.p_value)}</td><td class=\"num\">{fmt_p(row.q_value)}</td>"
            f"<td class=\"num\">{fmt_count(row.n_units)}</td><td class=\"sig\">{marker}</td>{alias_td}</tr>"
        )
        plot_rows.append(ForestRow(
            label, finite(row.estimate), _bound(row.ci_low), _bound(row.ci_high),
            f"{effect_fmt(row.estimate)} {fmt_interval(row.ci_low, row.ci_high, effect_fmt)}", tone))
    thead = "".join(f"<th>{h}</th>" for h in head)
    tick = (lambda v: f"{v * 100:+g} pp" if v else "0 pp") if is_binary else (
        lambda v: fmt_number(v, signed=True, digits=3))
    plot = render_forest_plot(plot_rows, tick, f"Effects on {name}")
    about = []
    if metric is not None:
        about.append(f"{esc(metric.kind)}, {esc(metric.direction)} is better")
        if metric.non_inferiority_margin is not None:
            about.append(f"non-inferiority margin {fmt_effect(metric.non_inferiority_margin, is_binary)}")
        if metric.description:
            about.append(esc(metric.description))
    return (
        f"<section class=\"metric\"><h3>{esc(name)} <span class=\"badge info small\">{esc(role)}</span></h3>"
        + (f"<p class=\"muted small\">{'; '.join(about)}</p>" if about else "")
        + f"<table class=\"effects\"><thead><tr>{thead}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        + plot + "</section>"
    )


def _bound(value: Any) -> float | None:
    """CI ends for the plot: NaN is unknown (None); +-inf is kept so the bar runs to the edge."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return None if x != x else x


def _effects(exp: Experiment, metrics: dict[str, Metric], effects: pd.DataFrame) -> str:
    if effects.empty:
        return "<section><h2>Effects</h2><p class=\"muted\">No effects computed yet.</p></section>"
    parts = ["<section><h2>Effects</h2>"]
    for name, role in _metric_order(exp, effects):
        subset = effects[effects["metric"].astype(str) == name]
        parts.append(_metric_section(exp, name, role, metrics.get(name), subset))
    parts.append("</section>")
    return "".join(parts)


def _cell_sort_key(exp: Experiment, cell_id: str) -> tuple:
    levels = dict(part.split("=", 1) for part in cell_id.split("|") if "=" in part)
    key = []
    for factor in exp.factors:
        level = levels.get(factor.name)
        key.append(factor.levels.index(level) if level in factor.levels else len(factor.levels))
    return (*key, cell_id)


def _cells(exp: Experiment, metrics: dict[str, Metric], cells: pd.DataFrame) -> str:
    if cells.empty:
        return "<section><h2>Cells</h2><p class=\"muted\">No cell statistics.</p></section>"
    cells = cells.assign(cell_id=cells["cell_id"].astype(str), metric=cells["metric"].astype(str))
    names = list(dict.fromkeys(cells["metric"]))
    declared = [m for m, _ in exp.metrics.by_role()]
    names.sort(key=lambda m: (declared.index(m) if m in declared else len(declared), m))
    ids = sorted(set(cells["cell_id"]), key=lambda c: _cell_sort_key(exp, c))
    control = "|".join(f"{f.name}={f.control}" for f in exp.factors)
    lookup = {(r.cell_id, r.metric): (r.n, r.mean) for r in cells.itertuples(index=False)}
    one_n = all(cells.groupby("cell_id")["n"].nunique(dropna=False) <= 1)
    head = ["Cell"] + (["Units"] if one_n else []) + [
        f"{esc(m)} mean" if one_n else f"{esc(m)} mean (n)" for m in names]
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
            kind_binary = m in metrics and metrics[m].kind == "binary"
            text = fmt_level(mean, kind_binary) + ("" if one_n else f" ({fmt_count(n)})")
            tds.append(f"<td class=\"num\">{text}</td>")
        body.append(f"<tr>{''.join(tds)}</tr>")
    thead = "".join(f"<th>{h}</th>" for h in head)
    return (f"<section><h2>Cells</h2><table class=\"cells\"><thead><tr>{thead}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></section>")


def _quality(quality: dict | None) -> str:
    if not quality:
        return "<section><h2>Data quality</h2><p class=\"muted\">No data-quality summary.</p></section>"
    rows = "".join(f"<tr><td>{esc(k)}</td><td class=\"num\">{fmt_free(v)}</td></tr>" for k, v in quality.items())
    return (f"<section><h2>Data quality</h2><table class=\"quality\"><tbody>{rows}</tbody></table></section>")


def _footer(exp: Experiment) -> str:
    items = "".join(f"<li>{text}</li>" for text in ESTIMANDS)
    return (f"<footer><h2>How to read this report</h2><ul>{items}</ul>"
            f"<p class=\"small\">Intervals are at the {fmt_number(100 * (1 - exp.alpha))}% level (alpha "
            f"{fmt_number(exp.alpha)}). Effects are estimated only with at least "
            f"{fmt_count(exp.min_units_per_cell)} units per cell.</p></footer>")


def render_experiment_report(
    experiment: Experiment,
    metrics: dict[str, Metric],
    effects: pd.DataFrame,
    cells: pd.DataFrame,
    srm: dict | None,
    decision: dict,
    quality: dict | None,
    generated_at: dt.datetime,
) -> str:
    """The full HTML document (str) for one experiment; pure: writes nothing."""
    effects = _check_columns(effects, EFFECT_COLUMNS, "effects")
    cells = _check_columns(cells, CELL_COLUMNS, "cells")
    if len(effects) and "experiment_id" in effects:
        effects = effects[effects["experiment_id"].isna() | (effects["experiment_id"].astype(str) == experiment.id)]
    body = "".join([
        _header(experiment, generated_at), _decision(decision), _srm(srm),
        _effects(experiment, metrics, effects), _cells(experiment, metrics, cells), _quality(quality),
        _footer(experiment),
    ])
    return page(f"Experiment {experiment.id}: {(decision or {}).get('label') or 'no decision'}", body)
