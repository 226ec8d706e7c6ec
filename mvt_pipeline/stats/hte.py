"""Heterogeneous treatment effects (HTE): effects per segment, heterogeneity test, shrinkage.

Why: "does the winning variant win for every platform / country / new vs returning user?" is
the next question after the overall effect, and the most abused one: with many segments some
estimate looks large by chance (the winner's curse). This module therefore reports, per
effect, (1) the per-segment estimates from the same exact engine, (2) one test of whether the
segments differ at all, (3) BH q-values across the segments and (4) empirical-Bayes shrunken
estimates that pull noisy segment estimates toward the common effect.

Method, for each effect row (term, level) of :func:`analyze_cells`:

* per segment ``i``: estimate ``y_i``, standard error ``s_i`` (``analyze_cells`` on the
  segment's cells; segments are disjoint sets of units, so the estimates are independent);
* Cochran's Q: ``w_i = 1/s_i^2``, ``ybar = sum w y / sum w``, ``Q = sum w_i (y_i - ybar)^2``,
  chi-square with ``k - 1`` df under "same effect in every segment". With independent segments
  and robust cell variances it equals the Wald test of the treatment x segment interaction in
  the per-unit model (the tests check this against statsmodels). ``I^2 = max(0, (Q-df)/Q)``
  (NaN for a single segment: undefined);
* between-segment variance (DerSimonian-Laird method of moments)
  ``tau^2 = max(0, (Q - (k-1)) / (sum w - sum w^2 / sum w))``;
* normal-normal empirical Bayes: ``theta_i ~ N(mu, tau^2)``, ``y_i ~ N(theta_i, s_i^2)``;
  ``mu`` is the random-effects mean (weights ``1/(s_i^2 + tau^2)``); the shrinkage factor is
  ``B_i = s_i^2/(s_i^2 + tau^2)``, the shrunk estimate ``mu + (1 - B_i)(y_i - mu)`` and its SE
  ``sqrt(s_i^2 (1 - B_i) + B_i^2 var(mu))`` (Morris 1983: includes the uncertainty of ``mu``).
  With ``tau^2 = 0`` every segment collapses to ``mu``: the data show no heterogeneity.

Segments whose smallest cell has fewer than ``min_cell_units`` units (docs/architecture.md §5a default 150)
or that miss a cell are skipped and listed in ``HTEResult.skipped`` with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from .cells import as_pandas
from .factorial import analyze_cells
from .multiplicity import benjamini_hochberg
from .ratio import analyze_ratio_cells

SEGMENT_COLUMNS = [
    "term", "level", "segment", "estimate", "std_error", "ci_low", "ci_high", "p_value", "q_value",
    "shrunk_estimate", "shrunk_std_error", "shrink_factor", "n_units",
]
HETEROGENEITY_COLUMNS = [
    "term", "level", "k", "pooled_estimate", "pooled_std_error", "q_stat", "df", "p_value", "q_value",
    "i2", "tau2", "re_mean", "re_std_error",
]
MIN_CELL_UNITS = 150


@dataclass
class HTEResult:
    """``segments``: one row per effect x segment; ``heterogeneity``: one row per effect."""

    segments: pd.DataFrame
    heterogeneity: pd.DataFrame
    skipped: dict = field(default_factory=dict)  # segment -> reason


def cochran_q(estimate, std_error) -> dict:
    """Fixed-effect pool, Cochran's Q, I^2, DerSimonian-Laird tau^2 and the random-effects mean.

    With one estimate there is nothing to compare: ``Q = 0`` on 0 df, ``p_value`` and ``i2`` are
    NaN (undefined, not "all heterogeneity"), ``tau2 = 0`` and the pooled/random-effects means
    are the estimate itself.
    """
    y = np.asarray(estimate, dtype=float)
    s = np.asarray(std_error, dtype=float)
    if y.shape != s.shape or y.ndim != 1 or y.size < 1:
        raise ValueError("estimate and std_error must be 1-D of equal, non-zero length")
    if np.any(~(s > 0)) or np.any(~np.isfinite(y)):
        raise ValueError("std_error must be positive and estimates finite")
    w = 1.0 / s**2
    sw = w.sum()
    ybar = float(np.sum(w * y) / sw)
    k = y.size
    q = float(np.sum(w * (y - ybar) ** 2)) if k > 1 else 0.0  # k = 1: rounding made Q ~ 1e-32 > 0
    df = k - 1
    denom = sw - np.sum(w**2) / sw
    tau2 = max(0.0, (q - df) / denom) if df > 0 and denom > 0 else 0.0
    w_re = 1.0 / (s**2 + tau2)
    mu = float(np.sum(w_re * y) / w_re.sum())
    return {
        "k": k, "pooled_estimate": ybar, "pooled_std_error": float(np.sqrt(1.0 / sw)),
        "q_stat": q, "df": df, "p_value": float(stats.chi2.sf(q, df)) if df > 0 else np.nan,
        "i2": np.nan if df == 0 else (max(0.0, (q - df) / q) if q > 0 else 0.0), "tau2": tau2,
        "re_mean": mu, "re_std_error": float(np.sqrt(1.0 / w_re.sum())),
    }


def eb_shrink(estimate, std_error, tau2: float, mu: float, mu_var: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normal-normal posterior means, their SEs and the shrinkage factors ``B_i`` (module doc)."""
    y = np.asarray(estimate, dtype=float)
    v = np.asarray(std_error, dtype=float) ** 2
    B = v / (v + tau2) if tau2 > 0 else np.ones_like(v)
    post = mu + (1.0 - B) * (y - mu)
    se = np.sqrt(v * (1.0 - B) + B**2 * mu_var)
    return post, se, B


def segment_effects(
    cell_stats_by_segment,
    factors: Mapping[str, Sequence[str]],
    segment_col: str,
    *,
    control: Mapping[str, str] | None = None,
    alpha: float = 0.05,
    se: str = "robust",
    max_order: int | None = None,
    covariate: bool = False,
    generators: Sequence[str] = (),
    codes: Mapping[str, str] | None = None,
    min_cell_units: int = MIN_CELL_UNITS,
    metric_kind: str = "mean",
) -> HTEResult:
    """Run :func:`analyze_cells` (or, with ``metric_kind="ratio"``, :func:`analyze_ratio_cells`)
    per value of ``segment_col`` and combine (see module docstring).

    ``cell_stats_by_segment``: the usual cell statistics plus a ``segment_col`` column (several
    rows per cell and segment are added up). Other arguments go to the per-segment analysis.
    ``q_value`` in ``segments`` is BH across the segments of one effect; in ``heterogeneity``
    it is BH across the effects' Q tests.
    """
    cols = list(cell_stats_by_segment.columns)
    if segment_col not in cols:
        raise ValueError(f"segment column {segment_col!r} missing; columns are {cols}")
    df = as_pandas(cell_stats_by_segment, cols)
    if df[segment_col].isna().any():
        raise ValueError(f"segment column {segment_col!r} has missing values")
    per_segment, skipped = {}, {}
    for seg, part in df.groupby(segment_col, sort=True):
        try:
            if metric_kind == "ratio":
                res = analyze_ratio_cells(part.drop(columns=[segment_col]), factors, control=control,
                                          alpha=alpha, generators=generators, codes=codes)
            else:
                res = analyze_cells(
                    part.drop(columns=[segment_col]), factors, control=control, alpha=alpha, se=se,
                    max_order=max_order, covariate=covariate, generators=generators, codes=codes,
                )
        except ValueError as exc:
            skipped[seg] = str(exc)
            continue
        n_min = int(res.cell_means["n"].min())
        n_grid = int(np.prod([len(v) for v in factors.values()])) if not generators else len(res.cell_means)
        if len(res.cell_means) < n_grid:
            skipped[seg] = f"only {len(res.cell_means)} of {n_grid} cells observed"
        elif n_min < min_cell_units:
            skipped[seg] = f"smallest cell has {n_min} units < min_cell_units={min_cell_units}"
        else:
            per_segment[seg] = res.effects
    seg_rows, het_rows = [], []
    if per_segment:
        long = pd.concat(
            [e.assign(segment=s) for s, e in per_segment.items()], ignore_index=True
        )
        for (term, level), g in long.groupby(["term", "level"], sort=False):
            g = g.reset_index(drop=True)
            ok = g["std_error"].to_numpy() > 0
            q_vals = benjamini_hochberg(g["p_value"].to_numpy())
            shrunk = np.full(len(g), np.nan)
            shrunk_se, B = shrunk.copy(), shrunk.copy()
            if ok.sum() >= 2:
                h = cochran_q(g.loc[ok, "estimate"], g.loc[ok, "std_error"])
                post, pse, b = eb_shrink(g.loc[ok, "estimate"], g.loc[ok, "std_error"], h["tau2"], h["re_mean"], h["re_std_error"] ** 2)
                shrunk[ok], shrunk_se[ok], B[ok] = post, pse, b
                het_rows.append({"term": term, "level": level, **h})
            for i, r in g.iterrows():
                seg_rows.append({
                    "term": term, "level": level, "segment": r["segment"], "estimate": r["estimate"],
                    "std_error": r["std_error"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                    "p_value": r["p_value"], "q_value": q_vals[i], "shrunk_estimate": shrunk[i],
                    "shrunk_std_error": shrunk_se[i], "shrink_factor": B[i], "n_units": r["n_units"],
                })
    het = pd.DataFrame(het_rows, columns=HETEROGENEITY_COLUMNS)
    if len(het):
        het["q_value"] = benjamini_hochberg(het["p_value"].to_numpy())
    return HTEResult(pd.DataFrame(seg_rows, columns=SEGMENT_COLUMNS), het, skipped)
