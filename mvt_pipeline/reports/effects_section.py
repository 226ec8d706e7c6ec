"""The "Effects" section: per metric (primary first) an effects table, its notes and a forest plot.

The report is regenerated every night, so a fixed-horizon 95% interval read on many nights claims
far more than it delivers (docs/statistics.md, section 5). When the effects carry the always-valid
columns (`seq_ci_low`, `seq_ci_high`, `seq_q_value`, ...) the table shows both intervals side by side,
the significance star and the row colour follow the experiment's `decision_basis` (so the page
agrees with the decision at its top), and a note under the table names the interval the decision
uses and the tuning point N*. Every one of the newer columns is optional: an effects frame with only
the original columns renders exactly as before, apart from a note that no always-valid interval
was computed.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from mvt_pipeline.registry.models import Experiment, Metric

from ..stats.cuped import IMBALANCE_ALPHA  # pre-period imbalance flag (docs/statistics.md, section 4)
from ..stats.quantile import RANK_CLAMPED, min_events_per_cell

from .forest_plot import ForestRow
from .plots import forest_svg
from .formatting import (
    DASH, esc, finite, fmt_count, fmt_effect, fmt_interval, fmt_level, fmt_number, fmt_p, fmt_percent,
    fmt_p_phrase, fmt_share_change,
)

ROLE_ORDER = {"primary": 0, "secondary": 1, "guardrail": 2}
SEQ_DISPLAY = ("seq_ci_low", "seq_ci_high", "seq_q_value")


def contrast(exp: Experiment, term: Any, level: Any) -> str:
    """'green vs blue' for a main effect; 'green \u00d7 inline' for an interaction (raw text)."""
    factors, levels = str(term).split(":"), str(level).split(":")
    if len(factors) == 1:
        try:
            return f"{level} vs {exp.factor(factors[0]).control}"
        except KeyError:
            return str(level)
    return " \u00d7 ".join(levels)


def metric_order(exp: Experiment, frame: pd.DataFrame) -> list[tuple[str, str]]:
    """(metric, role) in reading order: primary, secondary, guardrail, then anything undeclared."""
    roles = dict((m, r) for m, r in reversed(exp.metrics.by_role()))
    declared = [m for m, _ in exp.metrics.by_role()]
    names = list(dict.fromkeys(frame["metric"].astype(str)))
    for name in names:
        if name not in roles:
            given = (frame.loc[frame["metric"].astype(str) == name, "metric_role"].dropna()
                     if "metric_role" in frame else pd.Series(dtype=object))
            roles[name] = str(given.iloc[0]) if len(given) else "other"

    def key(name: str) -> tuple:
        return (ROLE_ORDER.get(roles[name], 3), declared.index(name) if name in declared else len(declared), name)
    return [(name, roles[name]) for name in sorted(names, key=key)]


def metric_kind(name: str, metric: Metric | None, rows: pd.DataFrame) -> str | None:
    """The registry's kind, else the `metric_kind` column the analysis wrote, else unknown."""
    if metric is not None:
        return metric.kind
    if "metric_kind" in rows:
        given = rows["metric_kind"].dropna()
        if len(given):
            return str(given.iloc[0])
    return None


def uses_sequential(exp: Experiment, frame: pd.DataFrame) -> bool:
    """Decisions read the always-valid q (p) when asked to and when the analysis computed it;
    the same fallback as `analysis.decisions`, so the star never disagrees with the decision."""
    return exp.decision_basis == "sequential" and ("seq_q_value" in frame or "seq_p_value" in frame)


def _significant(row: dict, alpha: float, sequential: bool) -> bool:
    p_col, q_col = ("seq_p_value", "seq_q_value") if sequential else ("p_value", "q_value")
    q, p = finite(row.get(q_col)), finite(row.get(p_col))
    judged = q if q is not None else p
    return judged is not None and judged < alpha


def _tone(row: dict, metric: Metric | None, significant: bool) -> str:
    estimate = finite(row.get("estimate"))
    if not significant or estimate is None or estimate == 0:
        return "neutral"
    better = estimate > 0 if (metric is None or metric.direction == "higher") else estimate < 0
    return "good" if better else "bad"


def bound(value: Any) -> float | None:
    """CI ends for the plot: NaN is unknown (None); +-inf is kept so the bar runs to the edge."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return None if x != x else x


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"true", "1", "yes"}
    try:
        return bool(value) and not pd.isna(value)
    except (TypeError, ValueError):
        return False


def _first(rows: pd.DataFrame, column: str) -> Any:
    if column not in rows:
        return None
    values = rows[column].dropna()
    return values.iloc[0] if len(values) else None


def _about(metric: Metric | None, kind: str | None, share: bool) -> list[str]:
    about = []
    if metric is not None:
        about.append(f"{esc(metric.kind)}, {esc(metric.direction)} is better")
    elif kind:
        about.append(esc(kind))
    if kind == "quantile":
        q = metric.q if metric is not None and metric.q is not None else None
        which = f"P{fmt_number(q * 100, digits=3)}" if q is not None else "the quantile"
        about.append(f"effects are differences of {which} in the metric's own unit")
    elif kind == "ratio":
        about.append("effects are differences of the ratio" + (", in percentage points (a rate)" if share else ""))
    if metric is not None:
        if metric.non_inferiority_margin is not None:
            about.append(f"non-inferiority margin {fmt_effect(metric.non_inferiority_margin, share)}")
        if metric.description:
            about.append(esc(metric.description))
    return about


def _cuped_note(rows: pd.DataFrame) -> str:
    """'CUPED: variance -42%' when the pre-period covariate was used, and a warning when the
    pre-period itself differs between cells (then the adjustment rests on a broken randomisation)."""
    if "cuped" not in rows or not any(_truthy(v) for v in rows["cuped"]):
        return ""
    reduction = _first(rows, "variance_reduction")
    text = (f"CUPED: variance {fmt_share_change(-finite(reduction)) if finite(reduction) is not None else DASH} "
            "with the pre-period value of the metric as covariate.")
    imbalance = finite(_first(rows, "pre_imbalance_p"))
    warning = ""
    if imbalance is not None and imbalance < IMBALANCE_ALPHA:
        warning = (f"<p class=\"note warn-note\">\u26a0 Pre-period imbalance ({fmt_p_phrase(imbalance)}): the cells "
                   "already differed before exposure, so randomisation or exposure logging may be broken; "
                   "treat these effects with caution.</p>")
    return f"<p class=\"note small\">{text}</p>{warning}"


def _basis_note(exp: Experiment, rows: pd.DataFrame, sequential: bool, has_seq: bool) -> str:
    """One line under the table: which interval decides, N*, and the SE type."""
    alpha = fmt_number(exp.alpha)
    if sequential:
        n_star = _first(rows, "n_star")
        tuning = (f"; N* = {fmt_count(n_star)} planned units (the always-valid interval is tightest there"
                  + ("" if exp.planned_units else "; no planned size in the registry, so N* is tonight's "
                     "units and the interval is valid for this look only") + ")") if finite(n_star) else ""
        text = (f"\u2605 and colours use the <b>always-valid</b> interval and its q (q &lt; {alpha}), safe to read "
                f"every night{tuning}.")
    elif exp.decision_basis == "fixed":
        text = (f"\u2605 and colours use the <b>fixed-horizon</b> interval and q (q &lt; {alpha}), as the "
                "experiment's decision basis is fixed: valid only when read once, at the planned end"
                + ("; the always-valid interval is shown for reference." if has_seq else "."))
    else:
        text = (f"Always-valid intervals were not computed; \u2605 uses the fixed-horizon q (q &lt; {alpha}), "
                "valid only when read once, at the planned end.")
    se_type = _first(rows, "se_type")
    if se_type is not None:
        text += f" Standard errors: {esc(se_type)}."
    return f"<p class=\"note small\">{text}</p>"


def _shrunk(row: dict, effect_fmt) -> str:
    """The empirical-Bayes shrunk interaction under its raw estimate (stats/interactions.py)."""
    value = finite(row.get("shrunk_estimate"))
    if value is None or not str(row.get("term", "")).count(":"):
        return ""
    return (f"<br><span class=\"muted small shrunk\" title=\"empirical-Bayes estimate, shrunk towards 0 with "
            f"the other interactions (at most one SE)\">EB {effect_fmt(value)}</span>")


def metric_section(exp: Experiment, name: str, role: str, metric: Metric | None, rows: pd.DataFrame,
                   share: bool) -> str:
    """One metric's table, notes and forest plot; `share` renders levels in % and effects in pp."""
    kind = metric_kind(name, metric, rows)
    has_seq = any(c in rows for c in SEQ_DISPLAY)
    sequential = uses_sequential(exp, rows)
    ci_label = f"{fmt_number(100 * (1 - exp.alpha))}% CI"
    decides = " <span class=\"tag\">decides</span>"
    rows = rows.assign(_order=rows["term"].astype(str).str.count(":")).sort_values("_order", kind="stable")
    has_aliases = rows["aliases"].dropna().astype(str).str.strip().ne("").any()
    head = (["Effect", "Contrast", "Estimate", ci_label + ("" if sequential or not has_seq else decides)]
            + ([f"Always-valid {ci_label}" + (decides if sequential else "")] if has_seq else [])
            + ["Control mean", "Relative lift", f"Lift {ci_label}", "p",
               "q" + ("" if sequential or not has_seq else decides)]
            + (["Always-valid q" + (decides if sequential else "")] if has_seq else [])
            + ["Units", "Sig."] + (["Aliased with"] if has_aliases else []))
    effect_fmt = lambda v: fmt_effect(v, share)  # noqa: E731
    lift_fmt = lambda v: fmt_percent(v, signed=True)  # noqa: E731
    body, plot_rows = [], []
    for row in rows.to_dict("records"):
        label_contrast = contrast(exp, row["term"], row["level"])
        label = f"{row['term']}: {label_contrast}"
        alias_td = (f"<td>{esc(row['aliases']).replace(':', ':<wbr>') if not pd.isna(row['aliases']) else ''}</td>"
                    if has_aliases else "")
        status = "ok" if pd.isna(row["status"]) else str(row["status"])
        if status == RANK_CLAMPED and metric is not None and metric.q:
            status = (f"too few events per cell for P{100 * metric.q:g} (needs at least "
                      f"{fmt_count(min_events_per_cell(metric.q))} per cell; read as inconclusive)")
        if status != "ok":
            span = len(head) - 2 - (1 if has_aliases else 0)
            body.append(f"<tr class=\"unavailable\"><td>{esc(row['term'])}</td><td>{esc(label_contrast)}</td>"
                        f"<td colspan=\"{span}\">not estimated: {esc(status)}</td>{alias_td}</tr>")
            plot_rows.append(ForestRow(label, None, None, None, f"{DASH} ({esc(status)})"))
            continue
        significant = _significant(row, exp.alpha, sequential)
        tone = _tone(row, metric, significant)
        marker = "<span title=\"significant\">\u2605</span>" if significant else ""
        seq_low, seq_high = row.get("seq_ci_low"), row.get("seq_ci_high")
        cells = [
            f"<td>{esc(row['term']).replace(':', ':<wbr>')}</td><td>{esc(label_contrast)}</td>",
            f"<td class=\"num\">{effect_fmt(row['estimate'])}{_shrunk(row, effect_fmt)}</td>",
            f"<td class=\"num\">{fmt_interval(row['ci_low'], row['ci_high'], effect_fmt)}</td>",
            f"<td class=\"num av\">{fmt_interval(seq_low, seq_high, effect_fmt)}</td>" if has_seq else "",
            f"<td class=\"num\">{fmt_level(row['control_mean'], share)}</td>",
            f"<td class=\"num\">{lift_fmt(row['rel_lift'])}</td>",
            f"<td class=\"num\">{fmt_interval(row['rel_ci_low'], row['rel_ci_high'], lift_fmt)}</td>",
            f"<td class=\"num\">{fmt_p(row['p_value'])}</td><td class=\"num\">{fmt_p(row['q_value'])}</td>",
            f"<td class=\"num av\">{fmt_p(row.get('seq_q_value'))}</td>" if has_seq else "",
            f"<td class=\"num\">{fmt_count(row['n_units'])}</td><td class=\"sig\">{marker}</td>{alias_td}",
        ]
        body.append(f"<tr class=\"{tone}\">{''.join(cells)}</tr>")
        plot_rows.append(ForestRow(
            label, finite(row["estimate"]), bound(row["ci_low"]), bound(row["ci_high"]),
            f"{effect_fmt(row['estimate'])} {fmt_interval(row['ci_low'], row['ci_high'], effect_fmt)}", tone,
            bound(seq_low), bound(seq_high)))
    thead = "".join(f"<th>{h}</th>" for h in head)
    tick = (lambda v: f"{v * 100:+g}" if v else "0") if share else (  # the axis title carries the unit
        lambda v: fmt_number(v, signed=True, digits=3))
    unit = "pp" if share else (metric.unit if metric is not None and metric.unit else "")
    what = f"P{100 * (metric.q or 0.5):g} " if metric is not None and metric.kind == "quantile" else ""
    plot = forest_svg(plot_rows, title=f"Effects on {name}",
                      x_label=f"Effect on {what}{name}" + (f" ({unit})" if unit else "") + ", treatment \u2212 control",
                      tick_format=tick)
    legend = ("<p class=\"muted small legend\">Plot: dot and thin bar = estimate and fixed-horizon "
              f"{ci_label}; wide pale band = always-valid {ci_label}.</p>"
              if any(r.outer_low is not None or r.outer_high is not None for r in plot_rows) else "")
    about = _about(metric, kind, share)
    return (
        f"<section class=\"metric\"><h3>{esc(name)} <span class=\"badge info small\">{esc(role)}</span></h3>"
        + (f"<p class=\"muted small\">{'; '.join(about)}</p>" if about else "")
        + _cuped_note(rows)
        + f"<div class=\"wide\"><table class=\"effects\"><thead><tr>{thead}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table></div>"
        + _basis_note(exp, rows, sequential, has_seq) + plot + legend + "</section>"
    )


def effects_section(exp: Experiment, metrics: dict[str, Metric], effects: pd.DataFrame,
                    shares: dict[str, bool]) -> str:
    """All metrics' effects; `shares[name]` says whether that metric reads in % / pp."""
    if effects.empty:
        return "<section><h2>Effects</h2><p class=\"muted\">No effects computed yet.</p></section>"
    parts = ["<section><h2>Effects</h2>"]
    for name, role in metric_order(exp, effects):
        subset = effects[effects["metric"].astype(str) == name]
        parts.append(metric_section(exp, name, role, metrics.get(name), subset, shares.get(name, False)))
    parts.append("</section>")
    return "".join(parts)
