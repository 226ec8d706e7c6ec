"""`analysis.guardrails`: every treated cell and every factor level judged against its guardrails.

Rows: one per (experiment, cell or factor level, guardrail metric). A *cell* row compares that
combination with the control cell (`cell_contrasts.py`), so harm that only shows in an interaction
is caught; a *level* row is the main effect of `analysis.effects` (the level's marginal mean vs the
control level's). With `harm = estimate` for a lower-is-better metric and `-estimate` otherwise:

* `p_harm`: one-sided test of harm > 0; `p_harm_adjusted` is Holm over all rows of the experiment
  (cells x levels x guardrails), so the chance of a false "harm" anywhere in an experiment stays at
  most alpha however many cells it has;
* `p_noninferiority`: one-sided test of harm < margin (the metric's `non_inferiority_margin`, in its
  own unit); `harm_bound` is the matching upper bound of the harm. Not adjusted: a combination is
  shipped only when *all* its rows are non-inferior, an intersection-union test, which is valid at
  alpha without correction (Berger 1982);
* `status`: `ok` when non-inferiority is shown (or, for a metric without a margin, when no harm is
  shown), `harm` when harm is significant after Holm, else `inconclusive`. A row resting on a
  quantile cell with too few events for its interval (`quantile_rank_clamped` in the effects or the
  cell contrasts) is always `inconclusive`: its interval is not a valid 95% one, so it can neither
  clear nor convict the combination (its p-value still counts in Holm's family).

Tests read the experiment's decision basis: always-valid p-values unless `decision_basis: fixed`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..registry import Experiment, Registry
from ..stats import holm, one_sided_bound, one_sided_p_value
from ..stats.quantile import RANK_CLAMPED
from .cell_contrasts import experiment_contrasts

GUARDRAIL_COLUMNS = [
    "experiment_id", "scope", "cell", "factor", "level", "flag_key", "metric", "metric_kind", "unit",
    "direction", "control_value", "treatment_value", "estimate", "std_error", "margin", "harm_bound",
    "p_harm", "p_harm_adjusted", "p_noninferiority", "decision_basis", "n_units", "status",
]


def method_of(experiment: Experiment) -> str:
    return "fixed" if experiment.decision_basis == "fixed" else "asymptotic_cs"


def _level_rows(experiment: Experiment, effects: pd.DataFrame) -> pd.DataFrame:
    rows = effects[(effects["experiment_id"] == experiment.id) & (effects["metric_role"] == "guardrail")
                   & effects["status"].isin(["ok", RANK_CLAMPED]) & effects["term"].notna()
                   & ~effects["term"].astype(str).str.contains(":")]
    if rows.empty:
        return pd.DataFrame()
    flags = {f.name: f.flag_key for f in experiment.factors}
    # the effects' always-valid intervals used the experiment's units so far for every row
    n_total = effects.loc[effects["experiment_id"] == experiment.id].groupby("metric")["n_units"].max()
    return pd.DataFrame({
        "experiment_id": experiment.id, "scope": "level",
        "cell": (rows["term"] + "=" + rows["level"]).to_numpy(), "factor": rows["term"].to_numpy(),
        "level": rows["level"].to_numpy(), "flag_key": rows["term"].map(flags).to_numpy(),
        "metric": rows["metric"].to_numpy(), "metric_kind": rows["metric_kind"].to_numpy(),
        "control_value": rows["control_mean"].to_numpy(),
        "treatment_value": (rows["control_mean"] + rows["estimate"]).to_numpy(),
        "estimate": rows["estimate"].to_numpy(), "std_error": rows["std_error"].to_numpy(),
        "n_units": rows["n_units"].to_numpy(), "_n": rows["metric"].map(n_total).to_numpy(),
        "_n_star": rows["n_star"].to_numpy(), "_unreliable": (rows["status"] != "ok").to_numpy(),
    })


def _cell_rows(contrasts: pd.DataFrame) -> pd.DataFrame:
    if contrasts.empty:
        return pd.DataFrame()
    return pd.DataFrame({
        "experiment_id": contrasts["experiment_id"], "scope": "cell", "cell": contrasts["cell_id"],
        "factor": None, "level": None, "flag_key": None, "metric": contrasts["metric"],
        "metric_kind": contrasts["metric_kind"], "control_value": contrasts["control_value"],
        "treatment_value": contrasts["treatment_value"], "estimate": contrasts["estimate"],
        "std_error": contrasts["std_error"], "n_units": contrasts["n_treatment"],
        "_n": contrasts["n_total"], "_n_star": contrasts["n_star"], "_unreliable": contrasts["status"] != "ok",
    })


def judge(rows: pd.DataFrame, experiment: Experiment, registry: Registry) -> pd.DataFrame:
    """Add the tests and the status to cell/level rows (estimate = treatment - control)."""
    rows = rows.reset_index(drop=True)
    metrics = {m.name: m for m in registry.metrics}
    sign = np.where(rows["metric"].map(lambda m: metrics[m].direction) == "lower", 1.0, -1.0)
    margin = rows["metric"].map(lambda m: metrics[m].non_inferiority_margin).astype(float).to_numpy()
    harm = sign * rows["estimate"].astype(float).to_numpy()
    se = rows["std_error"].astype(float).to_numpy()
    n = rows["_n"].astype(float).to_numpy()
    n_star = rows["_n_star"].astype(float).to_numpy()
    kw = dict(alpha=experiment.alpha, n_star=n_star, method=method_of(experiment))
    p_harm = np.atleast_1d(one_sided_p_value(harm, se, n, **kw))
    p_ni = np.where(np.isnan(margin), np.nan, np.atleast_1d(one_sided_p_value(margin - harm, se, n, **kw)))
    adjusted = np.asarray(holm(p_harm))
    is_harm = adjusted < experiment.alpha
    non_inferior = np.where(np.isnan(margin), ~is_harm, p_ni < experiment.alpha)
    rows["unit"] = rows["metric"].map(lambda m: metrics[m].unit)
    rows["direction"] = rows["metric"].map(lambda m: metrics[m].direction)
    rows["margin"] = margin
    rows["harm_bound"] = np.atleast_1d(one_sided_bound(harm, se, n, **kw))
    rows["p_harm"], rows["p_harm_adjusted"], rows["p_noninferiority"] = p_harm, adjusted, p_ni
    rows["decision_basis"] = experiment.decision_basis
    status = np.where(non_inferior, "ok", np.where(is_harm, "harm", "inconclusive"))
    rows["status"] = np.where(rows["_unreliable"].astype(bool), "inconclusive", status)
    return rows.reindex(columns=GUARDRAIL_COLUMNS)


def experiment_guardrails(experiment: Experiment, registry: Registry, effects: pd.DataFrame,
                          cell_stats: pd.DataFrame, cell_quantiles: pd.DataFrame | None) -> pd.DataFrame:
    contrasts = experiment_contrasts(experiment, registry, cell_stats, cell_quantiles, roles=("guardrail",))
    parts = [p for p in (_cell_rows(contrasts), _level_rows(experiment, effects)) if not p.empty]
    if not parts:
        return pd.DataFrame(columns=GUARDRAIL_COLUMNS)
    return judge(pd.concat(parts, ignore_index=True), experiment, registry)


def all_guardrails(registry: Registry, effects: pd.DataFrame, cell_stats: pd.DataFrame,
                   cell_quantiles: pd.DataFrame | None) -> pd.DataFrame:
    frames = [experiment_guardrails(e, registry, effects, cell_stats, cell_quantiles)
              for e in registry.experiments if e.status != "draft"]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=GUARDRAIL_COLUMNS)
