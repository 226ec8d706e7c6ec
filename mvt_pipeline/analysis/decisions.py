"""Turn effects, guardrails and SRM into one decision per experiment, with the reasons.

Rules in order (the first that fires sets the label; every finding is kept as a reason):
1. SRM failed -> "investigate: sample ratio mismatch" (effects cannot be trusted).
2. A guardrail main effect is significantly worse (p < alpha in the harmful direction)
   -> "stop: guardrail breached".
3. A cell has fewer analysable units than `min_units_per_cell` -> "keep running: not enough data".
4. A primary main effect has q < alpha in the harmful direction -> "do not ship".
5. Primary main effects with q < alpha in the good direction -> "ship: factor=level, ...".
6. Otherwise "keep running" (or "conclude: no detectable effect" past the end date).
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

from ..registry import Experiment, Registry


def _direction_sign(registry: Registry, metric: str) -> int:
    return 1 if registry.metric(metric).direction == "higher" else -1


def guardrail_breaches(registry: Registry, effects: pd.DataFrame) -> pd.DataFrame:
    """Guardrail main effects that are significantly worse (p < the experiment's alpha, in the
    metric's harmful direction)."""
    if effects.empty:
        return effects
    rows = effects[(effects["metric_role"] == "guardrail") & (effects["status"] == "ok")
                   & ~effects["term"].astype(str).str.contains(":")]
    alphas = {e.id: e.alpha for e in registry.experiments}
    harmful = [
        _direction_sign(registry, r.metric) * r.estimate < 0 and r.p_value < alphas.get(r.experiment_id, 0.05)
        for r in rows.itertuples()
    ]
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
        reasons.append(f"SRM chi-square p = {srm['p_value']:.2g} < 0.001: assignment is broken, "
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
    winners, losers = [], []
    for _, row in primary.iterrows():
        if pd.notna(row["q_value"]) and row["q_value"] < alpha:
            good = _direction_sign(registry, row["metric"]) * row["estimate"] > 0
            (winners if good else losers).append(f"{row['term']}={row['level']}")
            reasons.append(f"{row['metric']}: {row['term']}={row['level']} "
                           f"{'improves' if good else 'hurts'} it "
                           f"(estimate {row['estimate']:.4g}, q = {row['q_value']:.2g}).")
    if losers:
        label = label or "do not ship: " + ", ".join(losers)
    if winners:
        label = label or "ship: " + ", ".join(winners)
    if label is None:
        past_end = experiment.end_date is not None and today > experiment.end_date
        label = "conclude: no detectable effect" if past_end else "keep running"
        reasons.append("No primary effect is significant after the Benjamini-Hochberg correction.")
    return {"experiment_id": experiment.id, "label": label, "reasons": reasons}
