"""The "Which cell is best" section: the Bayesian read-out for the primary metric.

Factorial effects answer "what does each factor do"; a product owner also asks "which combination
do I ship". The posterior probability that each cell is best and its expected loss (what shipping
it gives up, on average, against the unknown best cell) answer that directly. It is shown for the
first primary metric only, sorted most-likely-best first, and labelled as a description of the
current posterior rather than a test: it ignores the factorial structure and is not calibrated
for nightly looks (docs/statistics.md, section 7).
"""

from __future__ import annotations

import pandas as pd

from mvt_pipeline.registry.models import Experiment, Metric

from .formatting import esc, fmt_effect, fmt_level, fmt_percent

BAYES_REQUIRED = ["metric", "cell_id", "posterior_mean", "prob_best", "expected_loss"]


def _cell_label(cell_id: str) -> str:
    return " \u00b7 ".join(cell_id.split("|"))


def _is_control(exp: Experiment, cell_id: str) -> bool:
    control = {f"{f.name}={f.control}" for f in exp.factors}
    return set(cell_id.split("|")) == control


def best_cell_section(exp: Experiment, metrics: dict[str, Metric], bayes: pd.DataFrame | None,
                      shares: dict[str, bool]) -> str:
    """The table for the primary metric; `bayes` None omits the section."""
    if bayes is None:
        return ""
    primary = exp.metrics.primary[0]
    title = "<section class=\"best\"><h2>Which cell is best</h2>"
    if not (bayes.empty and len(bayes.columns) == 0):
        missing = [c for c in BAYES_REQUIRED if c not in bayes.columns]
        if missing:
            raise ValueError(f"bayes is missing column(s): {', '.join(missing)}")
    rows = bayes
    if len(rows) and "experiment_id" in rows:
        rows = rows[rows["experiment_id"].isna() | (rows["experiment_id"].astype(str) == exp.id)]
    rows = rows[rows["metric"].astype(str) == primary] if len(rows) else rows
    if rows.empty:
        return title + f"<p class=\"muted\">No Bayesian read-out for {esc(primary)} yet.</p></section>"
    share = shares.get(primary, False)
    metric = metrics.get(primary)
    rows = rows.assign(cell_id=rows["cell_id"].astype(str),
                       _pb=pd.to_numeric(rows["prob_best"], errors="coerce"))
    rows = rows.sort_values("_pb", ascending=False, na_position="last", kind="stable")
    body = []
    for i, r in enumerate(rows.to_dict("records")):
        mark = " <span class=\"muted small\">(control)</span>" if _is_control(exp, r["cell_id"]) else ""
        loss = fmt_effect(r["expected_loss"], share).lstrip("+")
        top = ' class="top"' if i == 0 else ""
        body.append(f"<tr{top}><td>{esc(_cell_label(r['cell_id']))}{mark}</td>"
                    f"<td class=\"num\">{fmt_level(r['posterior_mean'], share)}</td>"
                    f"<td class=\"num\">{fmt_percent(r['prob_best'], decimals=1)}</td>"
                    f"<td class=\"num\">{loss}</td></tr>")
    best = "lowest" if metric is not None and metric.direction == "lower" else "highest"
    return (title + f"<p class=\"muted small\">{esc(primary)} (primary; {best} is best). P(best): posterior "
            "probability that the cell's true mean is the best; expected loss: what shipping the cell gives up "
            "on average against the unknown best, in the metric's unit. Flat priors, independent cells: a "
            "description of the current data, not a test, and not safe to stop on.</p>"
            "<table class=\"bayes\"><thead><tr><th>Cell</th><th>Posterior mean</th><th>P(best)</th>"
            f"<th>Expected loss</th></tr></thead><tbody>{''.join(body)}</tbody></table></section>")
