"""The guardrails table of an experiment's page: every cell and level against its margin."""

from __future__ import annotations

from html import escape as esc

import pandas as pd

STATUS_TONE = {"harm": "bad", "inconclusive": "warn", "ok": "good"}


def _num(x, unit: str | None = None) -> str:
    if x is None or pd.isna(x):
        return "\u2013"
    return f"{x:.4g}" + (f" {esc(unit)}" if unit else "")


def guardrails_section(guardrails: pd.DataFrame | None) -> str:
    """Rows of `analysis.guardrails` for one experiment (None or empty: no section)."""
    if guardrails is None or guardrails.empty:
        return ""
    order = {"harm": 0, "inconclusive": 1, "ok": 2}
    rows = guardrails.assign(_o=guardrails["status"].map(order)).sort_values(["_o", "scope", "cell", "metric"])
    body = "".join(
        f"<tr><td>{esc(str(r.scope))}</td><td>{esc(str(r.cell))}</td><td>{esc(str(r.metric))}</td>"
        f"<td>{_num(r.control_value, r.unit)}</td><td>{_num(r.treatment_value, r.unit)}</td>"
        f"<td>{_num(r.estimate, r.unit)}</td><td>{_num(r.margin, r.unit)}</td><td>{_num(r.harm_bound, r.unit)}</td>"
        f"<td>{_num(r.p_harm_adjusted)}</td>"
        f"<td><span class=\"badge {STATUS_TONE.get(r.status, 'info')}\">{esc(str(r.status))}</span></td></tr>"
        for r in rows.itertuples())
    return (
        "<section aria-label=\"guardrails\"><h2>Guardrails</h2>"
        "<p class=\"muted small\">Each treated cell and factor level against control. Harm bound: the one-sided "
        "upper bound of the harm on the decision basis; ok = within the non-inferiority margin; harm = significantly "
        "worse after Holm across the experiment's rows.</p>"
        "<table class=\"guardrails\"><thead><tr><th>Scope</th><th>Cell / level</th><th>Metric</th><th>Control</th>"
        "<th>Treatment</th><th>Difference</th><th>Margin</th><th>Harm bound</th><th>Holm p</th><th>Status</th>"
        f"</tr></thead><tbody>{body}</tbody></table></section>"
    )
