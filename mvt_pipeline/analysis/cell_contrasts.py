"""Every treated cell against the control cell, per metric, from the per-cell sufficient statistics.

Why: a factorial test's harm often lives in one combination (a new CTA *with* inline validation),
which no main effect shows. Cells are independent samples, so a cell-vs-control contrast is the
difference of two cell estimates with the sum of their variances:

* means (binary, continuous, count): ``sum / n`` with the sample variance over ``n`` (Welch);
* ratios: ``sum N / sum D`` with the delta-method variance of ``stats/ratio.py``;
* quantiles: the cell quantile with the clustered variance of ``stats/quantile.py``; a cell with too
  few events for its order-statistic interval (``rank_clamped``) makes its rows
  ``status = "quantile_rank_clamped"`` (every other row is ``"ok"``), read as inconclusive downstream.

Always-valid intervals use the same ``n`` (the experiment's units so far) and ``N*`` (planned units)
as the effects table (``add_sequential``), so a cell row and an effect row read alike. No CUPED here:
each contrast uses its two cells only, so a covariate adjustment would need the pooled slope; the
plain contrast is unbiased under randomization and a little wider.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..registry import Experiment, Registry
from ..stats import QUANTILE_COLUMNS
from ..stats.quantile import RANK_CLAMPED, quantile_cell_variance, rank_clamped
from ..stats.cells import STAT_COLUMNS
from ..stats.ratio import RATIO_COLUMNS, ratio_moments
from ..stats.shifts import mean_of, shifts_for
from .cells import cell_id

CONTRAST_COLUMNS = [
    "experiment_id", "metric", "metric_role", "metric_kind", "cell_id", "control_value", "treatment_value",
    "estimate", "std_error", "n_control", "n_treatment", "n_total", "n_star", "status",
]


def control_cell(experiment: Experiment) -> str:
    return cell_id({f.name: f.control for f in experiment.factors}, experiment)


def cell_levels(cell: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in cell.split("|") if "=" in part)


def _sums(rows: pd.DataFrame, columns) -> dict[str, np.ndarray]:
    """The statistic columns and the shift columns that apply to them, as float arrays."""
    cols = list(columns) + shifts_for(columns, rows.columns)
    return {c: rows[c].astype(float).to_numpy() for c in cols}


def cell_estimates(kind: str, rows: pd.DataFrame) -> pd.DataFrame:
    """Per cell: (cell_id, n, value, variance, status) of the metric's cell estimate; cells without a
    usable variance (fewer than 2 units, no denominator) are dropped."""
    if rows.empty:
        return pd.DataFrame(columns=["cell_id", "n", "value", "variance", "status"])
    if kind == "quantile":
        st = {c: rows[c].astype(float).to_numpy() for c in QUANTILE_COLUMNS[1:]}
        st["n"] = rows["n_units"].astype(float).to_numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            variance, _deff = quantile_cell_variance(st)
        clamped = rank_clamped(st["n_events"], st["q"], st["ci_z"])
        out = pd.DataFrame({"cell_id": rows["cell_id"].to_numpy(), "n": st["n"],
                            "value": rows["quantile_value"].astype(float).to_numpy(), "variance": variance,
                            "status": np.where(clamped, RANK_CLAMPED, "ok")})
    elif kind == "ratio":  # the engine's delta method on (shifted) sums: stats/ratio.py, stats/shifts.py
        st = _sums(rows, RATIO_COLUMNS)
        if "n_units" in rows:  # every unit, those with no denominator too (as the effects use)
            st["n"] = rows["n_units"].astype(float).to_numpy()
        n = st["n"]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio, lin = ratio_moments(st, n)
            variance = lin / ((n - 1.0) * n * mean_of(st, "den_sum", n) ** 2)
        out = pd.DataFrame({"cell_id": rows["cell_id"].to_numpy(), "n": n, "value": ratio, "variance": variance})
    else:
        st = _sums(rows, STAT_COLUMNS)
        n = st["n"]
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = mean_of(st, "sum", n)
            variance = np.maximum(st["sum_sq"] - st["sum"] ** 2 / n, 0.0) / (n - 1.0) / n
        out = pd.DataFrame({"cell_id": rows["cell_id"].to_numpy(), "n": n, "value": mean, "variance": variance})
    if "status" not in out:
        out["status"] = "ok"
    return out[(out["n"] >= 2) & np.isfinite(out["value"]) & np.isfinite(out["variance"])].reset_index(drop=True)


def experiment_contrasts(experiment: Experiment, registry: Registry, cell_stats: pd.DataFrame,
                         cell_quantiles: pd.DataFrame | None, roles: tuple[str, ...]) -> pd.DataFrame:
    """Cell-vs-control rows of one experiment for its metrics of the given roles. `cell_stats`
    are overall `agg_cell_stats` rows, `cell_quantiles` the `agg_cell_quantiles` rows."""
    control = control_cell(experiment)
    frames = []
    for metric_name, role in experiment.metrics.by_role():
        if role not in roles:
            continue
        metric = registry.metric(metric_name)
        source = cell_quantiles if metric.kind == "quantile" else cell_stats
        if source is None or source.empty:
            continue
        rows = source[(source["experiment_id"] == experiment.id) & (source["metric"] == metric_name)]
        est = cell_estimates(metric.kind, rows)
        if control not in set(est["cell_id"]):
            continue
        ctrl = est[est["cell_id"] == control].iloc[0]
        treated = est[est["cell_id"] != control]
        n_total = float(rows["n_units"].sum())
        frames.append(pd.DataFrame({
            "experiment_id": experiment.id, "metric": metric_name, "metric_role": role,
            "metric_kind": metric.kind, "cell_id": treated["cell_id"].to_numpy(),
            "control_value": float(ctrl["value"]), "treatment_value": treated["value"].to_numpy(),
            "estimate": treated["value"].to_numpy() - float(ctrl["value"]),
            "std_error": np.sqrt(treated["variance"].to_numpy() + float(ctrl["variance"])),
            "n_control": float(ctrl["n"]), "n_treatment": treated["n"].to_numpy(), "n_total": n_total,
            "n_star": float(experiment.planned_units or n_total),
            "status": treated["status"].to_numpy() if ctrl["status"] == "ok" else ctrl["status"],
        }))
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CONTRAST_COLUMNS)
