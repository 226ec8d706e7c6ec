"""Turn effects, guardrails and SRM into one decision per experiment, with the reasons.

Rules in order (the first that fires sets the label; every finding is kept as a reason):
1. SRM failed -> "investigate: sample ratio mismatch" (effects cannot be trusted).
2. A guardrail main effect is significantly worse (p < alpha in the harmful direction)
   -> "stop: guardrail breached".
3. A cell has fewer analysable units than `min_units_per_cell` -> "keep running: not enough data".
4. A primary main effect has q < alpha in the harmful direction -> "do not ship".
5. Primary main effects with q < alpha in the good direction -> "ship: factor=level, ...".
p and q are the always-valid (sequential) ones unless the experiment sets decision_basis: fixed,
because the decision is re-taken every night.
6. Otherwise "keep running" (or "conclude: no detectable effect" past the end date).
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

from ..registry import Experiment, Registry
from ..registry.models import DEFAULT_ALPHA
from .srm_table import SRM_ALPHA


def _direction_sign(registry: Registry, metric: str) -> int:
    return 1 if registry.metric(metric).direction == "higher" else -1


def _columns(experiment: Experiment) -> tuple[str, str]:
    """(p, q) columns the decision uses: always-valid ones unless the registry asks for fixed."""
    return ("seq_p_value", "seq_q_value") if experiment.decision_basis == "sequential" else ("p_value", "q_value")


def guardrail_breaches(registry: Registry, effects: pd.DataFrame) -> pd.DataFrame:
    """Guardrail main effects that are significantly worse: one-sided test in the metric's harmful
    direction (p_one = p_two / 2 < alpha, docs/architecture.md §5a), on the experiment's decision basis
    (always-valid p-values by default)."""
    if effects.empty:
        return effects
    rows = effects[(effects["metric_role"] == "guardrail") & (effects["status"] == "ok")
                   & ~effects["term"].astype(str).str.contains(":")]
    experiments = {e.id: e for e in registry.experiments}
    harmful = []
    for r in rows.to_dict("records"):
        exp = experiments.get(r["experiment_id"])
        p_col = _columns(exp)[0] if exp else "p_value"
        p = r.get(p_col, r["p_value"])
        harmful.append(_direction_sign(registry, r["metric"]) * r["estimate"] < 0
                       and p / 2 < (exp.alpha if exp else DEFAULT_ALPHA))
    return rows[harmful] if len(rows) else rows


def decide(experiment: Experiment, registry: Registry, effects: pd.DataFrame,
           srm: dict | None, min_cell_units: int | None, today: dt.date) -> dict:
    alpha = experiment.alpha
    reasons: list[str] = []
    label = None
    ok = effects[(effects["status"] == "ok")] if not effects.empty else effects
    mains = ok[~ok["term"].astype(str).str.contains(":")] if not ok.empty else ok

    if srm and srm.get("passed") is False:
        label = "investigate: sample ratio mismatch"
        reasons.append(f"SRM chi-square p = {srm['p_value']:.2g} < {SRM_ALPHA}: assignment is broken, "
                       "effects are not trustworthy.")

    for _, row in guardrail_breaches(registry, effects.assign(experiment_id=experiment.id)).iterrows():
        reasons.append(f"Guardrail {row['metric']} is worse for {row['term']}={row['level']} "
                       f"(estimate {row['estimate']:.4g}, p = {row['p_value']:.2g}).")
        label = label or "stop: guardrail breached"

    if min_cell_units is not None and min_cell_units < experiment.min_units_per_cell:
        reasons.append(f"Smallest cell has {min_cell_units} analysable units "
                       f"(< {experiment.min_units_per_cell}).")
        label = label or "keep running: not enough data"

    primary = mains[mains["metric_role"] == "primary"]
    q_col = _columns(experiment)[1]
    if q_col not in primary:
        q_col = "q_value"
    winners, losers = [], []
    for _, row in primary.iterrows():
        if pd.notna(row[q_col]) and row[q_col] < alpha:
            good = _direction_sign(registry, row["metric"]) * row["estimate"] > 0
            (winners if good else losers).append(f"{row['term']}={row['level']}")
            reasons.append(f"{row['metric']}: {row['term']}={row['level']} "
                           f"{'improves' if good else 'hurts'} it "
                           f"(estimate {row['estimate']:.4g}, {q_col.replace('_value', '')} = {row[q_col]:.2g}).")
    if losers:
        label = label or "do not ship: " + ", ".join(losers)
    if winners:
        label = label or "ship: " + ", ".join(winners)
    if label is None:
        past_end = experiment.end_date is not None and today > experiment.end_date
        label = "conclude: no detectable effect" if past_end else "keep running"
        reasons.append("No primary effect is significant after the Benjamini-Hochberg correction"
                       + (" (always-valid p-values)." if q_col == "seq_q_value" else "."))
    return {"experiment_id": experiment.id, "label": label, "reasons": reasons}
