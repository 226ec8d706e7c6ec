"""The *guardrails* view of an experiment's page (read by on-call): every cell's and level's
guardrail rows against their margins, the error-budget burn per cell and window, what to turn off,
and links to the Dagster run and check that produced them."""

from __future__ import annotations

from html import escape as esc

import pandas as pd

from ..units import fmt_diff, fmt_level

STATUS_TONE = {"harm": "bad", "inconclusive": "warn", "ok": "good", "pause": "bad", "burning": "warn",
               "not_judged": "info"}


def _badge(status) -> str:
    return f"<span class=\"badge {STATUS_TONE.get(str(status), 'info')}\">{esc(str(status))}</span>"


def _p(x) -> str:
    return "\u2013" if x is None or pd.isna(x) else f"{x:.3g}"


def guardrails_section(guardrails: pd.DataFrame | None) -> str:
    """Rows of `analysis.guardrails` for one experiment (None or empty: no section)."""
    if guardrails is None or guardrails.empty:
        return ""
    order = {"harm": 0, "inconclusive": 1, "ok": 2}
    rows = guardrails.assign(_o=guardrails["status"].map(order)).sort_values(["_o", "scope", "cell", "metric"])
    body = "".join(
        f"<tr><td>{esc(str(r.scope))}</td><td>{esc(str(r.cell)).replace('|', '|<wbr>')}</td><td>{esc(str(r.metric))}</td>"
        f"<td class=\"num\">{fmt_level(r.control_value, r.unit)}</td>"
        f"<td class=\"num\">{fmt_level(r.treatment_value, r.unit)}</td>"
        f"<td class=\"num\">{fmt_diff(r.estimate, r.unit)}</td>"
        f"<td class=\"num\">{fmt_diff(r.margin, r.unit, signed=False)}</td>"
        f"<td class=\"num\">{fmt_diff(r.harm_bound, r.unit)}</td>"
        f"<td class=\"num\">{_p(r.p_harm_adjusted)}</td><td class=\"num\">{_p(r.p_noninferiority)}</td>"
        f"<td>{_badge(r.status)}</td></tr>"
        for r in rows.itertuples())
    return (
        "<section aria-label=\"guardrail rows\"><h3>Guardrail rows</h3>"
        "<p class=\"muted small\">Each treated cell (vs the control cell) and factor level (vs its control level). "
        "Harm bound: the one-sided upper bound of the harm (positive = worse) on the decision basis; ok = "
        "non-inferior (within the margin); harm = significantly worse after Holm across the experiment's rows; "
        "inconclusive = neither yet.</p>"
        "<div class=\"wide\"><table class=\"effects guardrails\"><thead><tr><th>Scope</th><th>Cell / level</th><th>Metric</th>"
        "<th>Control</th><th>Treatment</th><th>Difference</th><th>Margin</th><th>Harm bound</th><th>Holm p (harm)</th>"
        f"<th>p (non-inferior)</th><th>Status</th></tr></thead><tbody>{body}</tbody></table></div></section>"
    )


def burn_section(burn: pd.DataFrame | None) -> str:
    """Rows of `analysis.budget_burn` for one experiment: share of each cell's error budget consumed
    per window (the multi-window burn-rate method)."""
    if burn is None or burn.empty:
        return ""
    rows = burn.sort_values(["metric", "cell_id", "window_hours"])
    body = "".join(
        f"<tr><td>{esc(str(r.cell_id)).replace('|', '|<wbr>')}</td><td>{esc(str(r.metric))}</td><td class=\"num\">{int(r.window_hours)} h</td>"
        f"<td class=\"num\">{'' if pd.isna(r.burn_rate) else f'{r.burn_rate:.3g}x'}</td>"
        f"<td class=\"num\">{'' if pd.isna(r.budget_consumed) else f'{r.budget_consumed:.0%}'}</td>"
        f"<td>{_badge(r.status)}</td></tr>"
        for r in rows.itertuples())
    return ("<section aria-label=\"error budget burn\"><h3>Error-budget burn</h3>"
            "<p class=\"muted small\">Burn rate: the cell's bad-event share over the SLO's allowed share; budget: the "
            "share of the SLO period's error budget the cell consumed in the window. Above the pause share in a short "
            "window the decision is pause.</p>"
            "<div class=\"wide\"><table class=\"burn\"><thead><tr><th>Cell</th><th>Metric</th><th>Window</th>"
            f"<th>Burn rate</th><th>Budget consumed</th><th>Status</th></tr></thead><tbody>{body}</tbody></table>"
            "</div></section>")


def run_links(run_url: str | None, run_id: str | None, check_url: str | None) -> str:
    """Where the rows came from: the Dagster run and the guardrails check (links when the UI's base
    URL is configured, the run id otherwise)."""
    if not run_id:
        return ""
    run = f"<a href=\"{esc(run_url)}\">run {esc(run_id)}</a>" if run_url else f"run <code>{esc(run_id)}</code>"
    check = (f", <a href=\"{esc(check_url)}\">guardrails check</a>" if check_url
             else ", check <code>experiment_decisions / guardrails</code>")
    return f"<p class=\"small\">Computed by Dagster {run}{check}.</p>"


def turn_off_text(decision: dict | None) -> str:
    decision = decision or {}
    if decision.get("decision") not in ("stop_harm", "pause"):
        return "<p>Nothing to turn off tonight.</p>"
    flags = decision.get("flags") or {}
    what = ", ".join(f"{k} = {v}" for k, v in flags.items()) if isinstance(flags, dict) and flags else decision.get("cell")
    verb = "Turn off" if decision.get("decision") == "stop_harm" else "Reduce exposure of or pause"
    return f"<p class=\"turn-off\"><b>{verb}:</b> {esc(str(what))} (cell {esc(str(decision.get('cell')))})</p>"
