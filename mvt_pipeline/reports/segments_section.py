"""The "Effects by segment" section: how each main effect varies across device, country, ...

Segment tables invite the winner's curse: with a dozen segments one of them always looks great.
So each small table shows, next to the raw per-segment estimate and its BH q across the segments,
the empirical-Bayes shrunk estimate (what that segment can expect if we ship), and under it the
one test that answers "does the effect differ at all?": Cochran's Q with I\u00b2, judged by its
q-value when present (there is one Q test per effect and metric), phrased in plain words. Only
main effects are shown: interactions split by segment are three-way questions nobody acts on.
Per-segment intervals are fixed-horizon and exploratory; decisions never use them.
"""

from __future__ import annotations

import pandas as pd

from mvt_pipeline.registry.models import Experiment

from .effects_section import contrast, metric_order
from .formatting import (
    esc, finite, fmt_count, fmt_effect, fmt_interval, fmt_number, fmt_p, fmt_p_phrase, fmt_percent,
)

HTE_REQUIRED = ["metric", "segment_variable", "segment", "term", "level", "estimate", "ci_low", "ci_high"]
HTE_OPTIONAL = ["experiment_id", "std_error", "p_value", "q_value", "shrunk_estimate", "shrunk_std_error",
                "n_units"]
HETEROGENEITY_REQUIRED = ["metric", "segment_variable", "term", "level", "p_value"]
HETEROGENEITY_OPTIONAL = ["experiment_id", "k", "q_stat", "df", "q_value", "i2", "tau2"]


def prepare(frame: pd.DataFrame | None, required: list[str], optional: list[str], name: str,
            experiment_id: str) -> pd.DataFrame | None:
    """The experiment's rows with every optional column present (NaN when absent); None stays None
    (section omitted); a frame without a required column is a caller bug and raises."""
    if frame is None:
        return None
    if frame.empty and len(frame.columns) == 0:
        return pd.DataFrame(columns=required + optional)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} is missing column(s): {', '.join(missing)}")
    frame = frame.reindex(columns=list(dict.fromkeys([*frame.columns, *required, *optional])))
    keep = frame["experiment_id"].isna() | (frame["experiment_id"].astype(str) == experiment_id)
    return frame[keep]


def _main_effects(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["term"].notna() & ~frame["term"].astype(str).str.contains(":")]


def _verdict(test: dict | None, variable: str, alpha: float) -> str:
    """The heterogeneity result as a sentence a product owner can repeat."""
    if test is None:
        return (f"<caption class=\"note small\">No heterogeneity test across {esc(variable)} "
                "(fewer than two segments could be analysed).</caption>")
    p, q = finite(test.get("p_value")), finite(test.get("q_value"))
    judged = q if q is not None else p
    stats = [f"Cochran's Q = {fmt_number(test.get('q_stat'), digits=3)}"
             + (f", df = {fmt_count(test.get('df'))}" if finite(test.get("df")) is not None else ""),
             fmt_p_phrase(p)]
    if q is not None:
        stats.append(fmt_p_phrase(q, "q"))
    if finite(test.get("i2")) is not None:
        stats.append(f"I\u00b2 = {fmt_percent(test.get('i2'), decimals=0)}")
    detail = ", ".join(stats)
    if judged is None:
        return (f"<caption class=\"note small\">Heterogeneity across {esc(variable)} could not be tested "
                f"({detail}).</caption>")
    if judged < alpha:
        return (f"<caption class=\"note small hetero\"><b>The effect differs across {esc(variable)}</b> "
                f"({detail}); read the shrunk estimates for what each segment can expect.</caption>")
    return (f"<caption class=\"note small\">No evidence that the effect differs across {esc(variable)} "
            f"({detail}); with few or small segments this test has little power, so this is not proof that it "
            "is the same.</caption>")


def _segment_table(rows: pd.DataFrame, share: bool, ci_label: str, verdict: str) -> str:
    """The table with the heterogeneity verdict as its caption (drawn below it, as wide as it)."""
    effect_fmt = lambda v: fmt_effect(v, share)  # noqa: E731
    body = []
    for r in rows.to_dict("records"):
        shrunk = effect_fmt(r["shrunk_estimate"])
        if finite(r["shrunk_std_error"]) is not None:
            shrunk += f" <span class=\"muted\">\u00b1 {fmt_effect(r['shrunk_std_error'], share).lstrip('+')}</span>"
        body.append(f"<tr><td>{esc(r['segment'])}</td><td class=\"num\">{fmt_count(r['n_units'])}</td>"
                    f"<td class=\"num\">{effect_fmt(r['estimate'])}</td>"
                    f"<td class=\"num\">{fmt_interval(r['ci_low'], r['ci_high'], effect_fmt)}</td>"
                    f"<td class=\"num\">{shrunk}</td><td class=\"num\">{fmt_p(r['q_value'])}</td></tr>")
    return (f"<table class=\"segments\">{verdict}<thead><tr><th>Segment</th><th>Units</th><th>Estimate</th>"
            f"<th>{ci_label}</th><th>Shrunk estimate (\u00b1 SE)</th><th>q</th></tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def segments_section(exp: Experiment, hte: pd.DataFrame | None, heterogeneity: pd.DataFrame | None,
                     shares: dict[str, bool]) -> str:
    """Per metric, per main effect, per segment variable: a small table and the Q-test sentence.
    `hte`/`heterogeneity` must already be `prepare`d; `hte` None omits the section."""
    if hte is None:
        return ""
    title = "<section class=\"segments\"><h2>Effects by segment</h2>"
    mains = _main_effects(hte)
    if mains.empty:
        return (title + "<p class=\"muted\">No segment results: no segment variables are configured or no "
                "segment had enough units in every cell.</p></section>")
    tests: dict[tuple, dict] = {}
    if heterogeneity is not None:
        for t in _main_effects(heterogeneity).to_dict("records"):
            tests[tuple(str(t[c]) for c in ("metric", "term", "level", "segment_variable"))] = t
    ci_label = f"{fmt_number(100 * (1 - exp.alpha))}% CI"
    parts = [title, "<p class=\"muted small\">Main effects within each segment (fixed-horizon, exploratory: "
             "decisions do not use them). q is Benjamini\u2013Hochberg across the segments of one effect; the "
             "shrunk estimate pulls noisy segments towards the common effect (empirical Bayes) and is the "
             "better guess of what a segment will get.</p>"]
    mains = mains.assign(metric=mains["metric"].astype(str))
    for name, _role in metric_order(exp, mains):
        share = shares.get(name, False)
        of_metric = mains[mains["metric"] == name]
        parts.append(f"<h3>{esc(name)}</h3>")
        effects = list(dict.fromkeys(zip(of_metric["term"].astype(str), of_metric["level"].astype(str))))
        for term, level in effects:
            of_effect = of_metric[(of_metric["term"].astype(str) == term) & (of_metric["level"].astype(str) == level)]
            parts.append(f"<h4>{esc(term)}: {esc(contrast(exp, term, level))}</h4><div class=\"seg-grid\">")
            for variable in dict.fromkeys(of_effect["segment_variable"].astype(str)):
                rows = of_effect[of_effect["segment_variable"].astype(str) == variable]
                test = tests.get((name, term, level, variable))
                parts.append(f"<div class=\"seg-block\"><div class=\"small\"><b>by {esc(variable)}</b></div>"
                             + _segment_table(rows, share, ci_label, _verdict(test, variable, exp.alpha))
                             + "</div>")
            parts.append("</div>")
    parts.append("</section>")
    return "".join(parts)
