"""The *decision* view of an experiment's page (read by whoever decides): the decision, the
combination to ship or the variant to turn off, the primary lift with its decision-basis interval,
the guardrail status and days running / needed. Every number is a column of the night's
`analysis.decisions` row, the row the index, the alert and the Dagster metadata show too.
"""

from __future__ import annotations

import pandas as pd

from ..registry.models import Experiment, Metric
from ..units import fmt_diff, fmt_level
from .formatting import esc, finite, is_share_scale
from .page import decision_tone

STATUS_TONE = {"harm": "bad", "inconclusive": "warn", "ok": "good"}
ACTION = {"ship": "Ship", "stop_harm": "Turn off", "pause": "Reduce exposure or pause"}


def interval_name(decision: dict) -> str:
    return "always-valid" if decision.get("primary_interval", "sequential") == "sequential" else "fixed-horizon"


def primary_share(decision: dict, metric: Metric | None) -> bool:
    """Whether the primary lift reads in pp: decided from the decision row alone, so the index and
    the page (which both call this) can never disagree."""
    return metric is not None and is_share_scale(metric.kind, [decision.get("primary_control_value")])


def primary_lift_text(decision: dict, metric: Metric | None, share: bool) -> str:
    """'+0.9 pp [+0.2 pp, +1.6 pp] always-valid 95% CI (a=a1|b=b1 vs control 12.1 %)' or a dash."""
    unit = "pp" if share else (metric.unit if metric is not None else None)
    est = finite(decision.get("primary_estimate"))
    if est is None:
        return "\u2013"
    return (f"{fmt_diff(est, unit)} [{fmt_diff(decision.get('primary_ci_low'), unit)}, "
            f"{fmt_diff(decision.get('primary_ci_high'), unit)}] {interval_name(decision)}")


def _flags(decision: dict) -> str:
    flags = decision.get("flags") or {}
    if isinstance(flags, dict) and flags:
        return ", ".join(f"{k} = {v}" for k, v in flags.items())
    return ""


def _days(decision: dict) -> str:
    running = finite(decision.get("days_running"))
    needed = finite(decision.get("days_needed"))
    text = f"{int(running)} days" if running is not None else "\u2013"
    if needed is not None:
        text += f"; about {int(needed)} more needed at the current traffic"
    return text


def decision_view(exp: Experiment, metrics: dict[str, Metric], decision: dict | None, shares: dict[str, bool],
                  guardrail_status: str | None = None) -> str:
    """The decision box and its summary list (a missing decision reads as such, not as 'ship')."""
    decision = decision or {}
    label = decision.get("label") or "no decision"
    reasons = [r for r in (decision.get("reasons") or []) if r is not None]
    action = ACTION.get(str(decision.get("decision")))
    primary = decision.get("primary_metric") or (exp.metrics.primary[0] if exp.metrics.primary else None)
    metric = metrics.get(primary) if primary else None
    share = primary_share(decision, metric)
    status = decision.get("guardrail_status") or guardrail_status
    items = []
    if action and (_flags(decision) or decision.get("cell")):
        items.append((action, esc(_flags(decision) or decision.get("cell"))
                      + (f" <span class=\"muted small\">(cell {esc(decision['cell'])})</span>" if decision.get("cell")
                         else "")))
    if primary:
        cell = decision.get("primary_cell")
        ctrl = finite(decision.get("primary_control_value"))
        unit = "pp" if share else (metric.unit if metric is not None else None)
        level = fmt_level(ctrl, unit)
        items.append((f"Primary lift ({esc(primary)})",
                      f"<span class=\"lift\">{esc(primary_lift_text(decision, metric, share))} "
                      f"{100 * (1 - exp.alpha):g}% CI</span>"
                      + (f" <span class=\"muted small\">{esc(cell)} vs control ({esc(level)})</span>" if cell else "")))
    items.append(("Guardrails", f"<span class=\"badge {STATUS_TONE.get(status, 'info')}\">{esc(status or 'none')}</span>"))
    items.append(("Days running", esc(_days(decision))))
    if decision.get("rule"):
        items.append(("Rule", esc(decision["rule"])))
    meta = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items)
    reasons_html = "".join(f"<li>{esc(r)}</li>" for r in reasons)
    return (f"<section class=\"decision {decision_tone(label)}\" aria-label=\"decision\">"
            f"<div class=\"muted small\">Decision</div><div class=\"label\">{esc(label)}</div>"
            f"<dl class=\"meta\">{meta}</dl>" + (f"<ul>{reasons_html}</ul>" if reasons_html else "") + "</section>")


def worst_status(guardrails: pd.DataFrame | None) -> str | None:
    if guardrails is None or guardrails.empty:
        return None
    rank = {"ok": 0, "inconclusive": 1, "harm": 2}
    return max(guardrails["status"].astype(str), key=lambda s: rank.get(s, 0))
