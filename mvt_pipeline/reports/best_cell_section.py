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


def cell_guardrail_status(exp: Experiment, guardrails: pd.DataFrame | None) -> dict[str, str]:
    """Worst guardrail status per cell (harm > inconclusive > ok), from its cell rows and the rows of
    the levels it contains: a cell is not "best" to ship if a guardrail fails in it."""
    if guardrails is None or guardrails.empty:
        return {}
    rank = {"ok": 0, "inconclusive": 1, "harm": 2}
    out: dict[str, str] = {}
    levels = guardrails[guardrails["scope"] == "level"]
    for cell, g in guardrails[guardrails["scope"] == "cell"].groupby("cell"):
        parts = set(str(cell).split("|"))
        statuses = list(g["status"]) + list(levels.loc[levels["cell"].isin(parts), "status"])
        out[str(cell)] = max(statuses, key=lambda x: rank.get(x, 0))
    return out


def best_cell_section(exp: Experiment, metrics: dict[str, Metric], bayes: pd.DataFrame | None,
                      shares: dict[str, bool], guardrails: pd.DataFrame | None = None) -> str:
    """The table for the primary metric; `bayes` None omits the section. With the night's guardrail
    rows, cells with guardrail harm are ranked after the others and every cell shows its status."""
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
    status = cell_guardrail_status(exp, guardrails)
    rows = rows.assign(cell_id=rows["cell_id"].astype(str),
                       _pb=pd.to_numeric(rows["prob_best"], errors="coerce"))
    rows = rows.assign(_harm=rows["cell_id"].map(lambda c: status.get(c) == "harm"))
    rows = rows.sort_values(["_harm", "_pb"], ascending=[True, False], na_position="last", kind="stable")
    body = []
    for i, r in enumerate(rows.to_dict("records")):
        mark = " <span class=\"muted small\">(control)</span>" if _is_control(exp, r["cell_id"]) else ""
        loss = fmt_effect(r["expected_loss"], share).lstrip("+")
        top = ' class="top"' if i == 0 and not r["_harm"] else ""
        guard = ("control" if _is_control(exp, r["cell_id"]) else status.get(r["cell_id"], "\u2013")) if status else ""
        guard_cell = f"<td>{esc(guard)}</td>" if status else ""
        body.append(f"<tr{top}><td>{esc(_cell_label(r['cell_id']))}{mark}</td>"
                    f"<td class=\"num\">{fmt_level(r['posterior_mean'], share)}</td>"
                    f"<td class=\"num\">{fmt_percent(r['prob_best'], decimals=1)}</td>"
                    f"<td class=\"num\">{loss}</td>{guard_cell}</tr>")
    best = "lowest" if metric is not None and metric.direction == "lower" else "highest"
    return (title + f"<p class=\"muted small\">{esc(primary)} (primary; {best} is best). P(best): posterior "
            "probability that the cell's true mean is the best; expected loss: what shipping the cell gives up "
            "on average against the unknown best, in the metric's unit. Flat priors, independent cells: a "
            "description of the current data, not a test, and not safe to stop on."
            + (" Cells with guardrail harm are listed last: the decision ships only a combination whose "
               "guardrails are all non-inferior." if status else "") + "</p>"
            "<table class=\"bayes\"><thead><tr><th>Cell</th><th>Posterior mean</th><th>P(best)</th>"
            f"<th>Expected loss</th>{'<th>Guardrails</th>' if status else ''}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></section>")
