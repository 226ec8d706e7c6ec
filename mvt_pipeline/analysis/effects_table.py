"""Run the factorial engine for every (experiment, metric) in the registry and stack the results
into the `analysis.effects` contract, with multiplicity handled per decision family
(docs/architecture.md §5a): primary metrics together, secondary metrics together, guardrails on their own."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..registry import Experiment, Registry
from ..stats import (
    COVARIATE_COLUMNS, QUANTILE_COLUMNS, RATIO_COLUMNS, add_sequential, analyze_cells, analyze_quantile_cells,
    analyze_ratio_cells, benjamini_hochberg, validate_cell_stats,
)
from ..stats.interactions import add_shrinkage
from ..stats.shifts import shifts_for
from .cells import split_cell_ids

EFFECT_COLUMNS = [
    "experiment_id", "metric", "metric_role", "metric_kind", "term", "level", "aliases",
    "estimate", "std_error", "ci_low", "ci_high", "p_value", "q_value",
    "seq_ci_low", "seq_ci_high", "seq_p_value", "seq_q_value", "n_star",
    "control_mean", "rel_lift", "rel_ci_low", "rel_ci_high", "rel_p_value",
    "n_units", "se_type", "cuped", "variance_reduction", "pre_imbalance_p", "status",
    "shrunk_estimate", "shrink_factor",
]

MEAN_KINDS = {"binary", "continuous", "count"}


def _status_row(experiment: Experiment, metric: str, role: str, kind: str, status: str) -> dict:
    row = {c: np.nan for c in EFFECT_COLUMNS}
    row.update(experiment_id=experiment.id, metric=metric, metric_role=role, metric_kind=kind,
               term=None, level=None, aliases=None, se_type=None, status=status)
    return row


def experiment_effects(experiment: Experiment, registry: Registry, cell_stats: pd.DataFrame,
                       se: str = "robust", quantile_stats: pd.DataFrame | None = None) -> pd.DataFrame:
    """Effects of one experiment; `cell_stats` are its overall `agg_cell_stats` rows and
    `quantile_stats` its `agg_cell_quantiles` rows (quantile metrics)."""
    frames = []
    factors = {f.name: list(f.levels) for f in experiment.factors}
    control = {f.name: f.control for f in experiment.factors}
    for metric_name, role in experiment.metrics.by_role():
        metric = registry.metric(metric_name)
        if metric.kind == "quantile":
            source = quantile_stats if quantile_stats is not None else pd.DataFrame(columns=["metric", "n_units"])
        else:
            source = cell_stats
        rows = source[source["metric"] == metric_name]
        rows = rows[rows["n_units"] > 0]
        if rows.empty:
            frames.append(pd.DataFrame([_status_row(experiment, metric_name, role, metric.kind,
                                                    "not analysed: no exposed units yet")]))
            continue
        design = dict(control=control, generators=experiment.design.generators,
                      codes=experiment.factor_codes(), alpha=experiment.alpha)
        levels = split_cell_ids(rows["cell_id"], experiment)
        try:
            if metric.kind == "quantile":
                stats = rows[list(QUANTILE_COLUMNS[1:])].astype(float).assign(n=rows["n_units"].astype(float))
                result = analyze_quantile_cells(pd.concat([levels, stats], axis=1), factors, **design)
                used_se = "delta-quantile"
            elif metric.kind == "ratio":
                stats = rows[list(RATIO_COLUMNS) + shifts_for(RATIO_COLUMNS, rows.columns)].astype(float)
                stats = stats.assign(n=rows["n_units"].astype(float))
                result = analyze_ratio_cells(pd.concat([levels, stats], axis=1), factors, **design)
                used_se = "delta"
            else:
                sums = ["n", "sum", "sum_sq", *COVARIATE_COLUMNS]
                cells = pd.concat([levels, rows[sums + shifts_for(sums, rows.columns)].astype(float)], axis=1)
                if metric.kind == "binary":  # the engine cannot tell a proportion from a mean
                    validate_cell_stats(cells, "binary", cell=list(factors))
                result = _mean_effects(cells, factors, design, se)
                used_se = se
        except ValueError as exc:
            frames.append(pd.DataFrame([_status_row(experiment, metric_name, role, metric.kind,
                                                    f"not analysed: {exc}")]))
            continue
        n_star = experiment.planned_units or result.n_total
        eff = add_sequential(result.effects, n=result.n_total, n_star=n_star, alpha=experiment.alpha)
        eff["n_star"] = n_star
        cuped = getattr(result, "cuped", None)
        eff["cuped"] = cuped is not None
        eff["variance_reduction"] = cuped["variance_reduction"] if cuped else np.nan
        eff["pre_imbalance_p"] = cuped["pre_imbalance_p"] if cuped else np.nan
        eff["experiment_id"] = experiment.id
        eff["metric"] = metric_name
        eff["metric_role"] = role
        eff["metric_kind"] = metric.kind
        eff["se_type"] = used_se
        eff["status"] = eff["status"] if "status" in eff else "ok"  # quantiles: ok / quantile_rank_clamped
        if "aliases" not in eff:
            eff["aliases"] = None
        eff = add_shrinkage(eff)  # empirical-Bayes interactions beside the raw ones (stats/interactions.py)
        frames.append(eff.reindex(columns=EFFECT_COLUMNS))
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=EFFECT_COLUMNS)
    return _family_q_values(out)


def _mean_effects(cells: pd.DataFrame, factors: dict, design: dict, se: str):
    """CUPED (pre-period covariate, pooled theta) when the covariate varies within cells;
    otherwise, e.g. no unit has pre-period data yet, the plain analysis."""
    x_var = (cells["cov_sum_sq"] - cells["cov_sum"] ** 2 / cells["n"]).sum()
    if np.isfinite(x_var) and x_var > 1e-12:
        try:
            return analyze_cells(cells, factors, se=se, covariate=True, **design)
        except ValueError:
            pass
    return analyze_cells(cells.drop(columns=[c for c in (*COVARIATE_COLUMNS, "cov_shift") if c in cells]),
                         factors, se=se, **design)


def _family_q_values(effects: pd.DataFrame) -> pd.DataFrame:
    """BH across effects x metrics within the primary family and within the secondary family;
    guardrails are judged on their own p-values. Rows not `ok` (a quantile with too few events)
    have no valid p-value for the family and get no q-value."""
    effects = effects.copy()
    for p_col, q_col in (("p_value", "q_value"), ("seq_p_value", "seq_q_value")):
        effects[q_col] = np.nan
        for role in ("primary", "secondary"):
            mask = (effects["metric_role"] == role) & effects[p_col].notna() & (effects["status"] == "ok")
            if mask.any():
                effects.loc[mask, q_col] = benjamini_hochberg(effects.loc[mask, p_col].to_numpy())
        guard = (effects["metric_role"] == "guardrail") & effects[p_col].notna()
        effects.loc[guard, q_col] = effects.loc[guard, p_col]
    return effects


def all_effects(registry: Registry, agg_cell_stats: pd.DataFrame, se: str = "robust",
                agg_cell_quantiles: pd.DataFrame | None = None) -> pd.DataFrame:
    overall = agg_cell_stats[agg_cell_stats["segment"] == "overall"]
    frames = []
    for experiment in registry.experiments:
        if experiment.status == "draft":
            continue
        stats = overall[overall["experiment_id"] == experiment.id]
        quantiles = (agg_cell_quantiles[agg_cell_quantiles["experiment_id"] == experiment.id]
                     if agg_cell_quantiles is not None else None)
        frames.append(experiment_effects(experiment, registry, stats, se=se, quantile_stats=quantiles))
    if not frames:
        return pd.DataFrame(columns=EFFECT_COLUMNS)
    return pd.concat(frames, ignore_index=True)
