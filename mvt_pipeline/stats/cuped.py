"""CUPED / ANCOVA from per-cell sufficient statistics: ``y = X beta + theta * x + e``.

Why: the pre-period value ``x`` of a metric explains part of each unit's outcome, so adding
it as a covariate with ONE common slope (the pooled CUPED ``theta``) removes that part of the
noise without biasing contrasts (assignment is random, so ``x`` is balanced in expectation).
The engine never sees units, but per cell ``sum x``, ``sum x^2`` and ``sum x*y`` are enough
for the exact per-unit OLS fit:

* the covariate is centred at its unit-weighted grand mean ``xg`` (``u = x - xg``), so the
  cell-model coefficients give *adjusted* cell means (at ``x = xg``) directly and the
  intercept no longer fights a large covariate mean numerically;
* Frisch-Waugh: regress the cell means of ``y`` and ``u`` on ``X`` (WLS, weights ``n_c``); the
  residual cross products of the two are the within-cell sums plus the weighted products of
  the cell-mean residuals, so ``theta = R_uy / R_uu`` and ``beta = b_y - theta * b_u``. With a
  saturated ``X`` the cell-mean residuals vanish and ``theta`` is the pooled within-cell
  covariance of (x, y) over the pooled within-cell variance of x;
* ``(W'W)^-1`` by the Schur complement ``R_uu``; ``RSS = sum_c RSS_c`` with
  ``RSS_c = SSyy_c - 2 theta SSxy_c + theta^2 SSxx_c + n_c r_c^2`` (within-cell, centred sums).

Pooled SEs (``sigma^2 (W'W)^-1``, t with ``N - p - 1`` df) and the Type II ANCOVA table are
exactly statsmodels ``ols("y ~ C(A, Sum) * C(B, Sum) + x")``.

Robust SEs are NOT statsmodels HC2 (nor HC0/HC1): those weight every unit by its own
``e_i^2`` (and ``1 - h_i``, with ``h_i`` quadratic in ``x_i``), which needs per-cell sums of
``x^3, x^4, x^2 y, x^2 y^2``. The estimator used instead, exactly computable from the sums, is a
*cell-wise HC2*: errors are allowed a different variance in every cell (the heteroskedasticity
an experiment actually has) and each cell's variance is estimated with HC2's correction averaged
over the cell,

``V = B (sum_c s_c^2 W_c'W_c) B``,  ``s_c^2 = RSS_c / (n_c - tr(B W_c'W_c)) = RSS_c / sum_{i in c} (1 - h_i)``.

Without a covariate it *is* HC2 (every unit of a cell has the same leverage), it is unbiased
when errors are homoskedastic (as HC2 is), and for large cells it is the usual CUPED
variance ``var_c(y - theta x) / n_c`` per cell plus the uncertainty of ``theta``. Reference
distribution: as for HC2 (``wls.py``), Welch-Satterthwaite df from the per-cell shares, each on
``n_c - tr(B W_c'W_c)`` df; normal when that df is large. The tests check it against a per-unit
numpy computation of the same formula and that it is close to statsmodels HC2.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import pandas as pd
from scipy import stats

from .cells import CellData
from .coding import Term
from .wls import CellComponents, WLSFit, columns_of

COVARIATE_NAME = "covariate"
IMBALANCE_ALPHA = 0.001  # docs/architecture.md §5a: pre-exposure imbalance flagged at p < 0.001


def _centred_means(cells: CellData) -> tuple[np.ndarray, float]:
    xg = float(np.sum(cells.n * cells.cov_mean) / cells.n_total)
    return cells.cov_mean - xg, xg


def _residualize(X: np.ndarray, cells: CellData, ubar: np.ndarray):
    """WLS of the cell means of ``y`` and ``u`` on ``X``: coefficients and cell-mean residuals."""
    w = np.sqrt(cells.n)
    coef, *_ = np.linalg.lstsq(X * w[:, None], np.column_stack([cells.mean, ubar]) * w[:, None], rcond=None)
    resid = np.column_stack([cells.mean, ubar]) - X @ coef
    ryy = float(np.sum(cells.n * resid[:, 0] ** 2))
    ruu = float(cells.cov_ss_within.sum() + np.sum(cells.n * resid[:, 1] ** 2))
    ruy = float(cells.cross_within.sum() + np.sum(cells.n * resid[:, 0] * resid[:, 1]))
    return coef, resid, ryy, ruu, ruy


def fit_ancova(X: np.ndarray, cells: CellData) -> WLSFit:
    """Exact per-unit OLS of ``y`` on ``[X, x - xg]``; the covariate is the last coefficient."""
    ubar, _ = _centred_means(cells)
    scale = float(cells.cov_ss_within.sum() + np.sum(cells.n * ubar**2))
    coef, resid, _, ruu, ruy = _residualize(X, cells, ubar)
    if not ruu > 1e-12 * max(scale, 1e-300):
        raise ValueError(
            "the covariate has no variation left after the cell model (constant within cells "
            "and explained by the factors): CUPED is not estimable; use covariate=False"
        )
    theta = ruy / ruu
    beta = np.append(coef[:, 0] - theta * coef[:, 1], theta)
    xtwx_inv = np.linalg.inv(X.T @ (X * cells.n[:, None]))
    gz = coef[:, 1]
    p = X.shape[1]
    bread = np.empty((p + 1, p + 1))
    bread[:p, :p] = (xtwx_inv + xtwx_inv.T) / 2.0 + np.outer(gz, gz) / ruu
    bread[:p, p] = bread[p, :p] = -gz / ruu
    bread[p, p] = 1.0 / ruu
    X_ext = np.column_stack([X, ubar])
    rss = float(cell_rss(cells, theta, resid[:, 0] - theta * resid[:, 1]).sum())
    return WLSFit(X_ext, beta, bread, X_ext @ beta, rss, cells.n_total - (p + 1))


def cell_rss(cells: CellData, theta: float, mean_resid: np.ndarray) -> np.ndarray:
    """Per-cell residual SS of the units, from within-cell sums and the cell-mean residual."""
    within = cells.ss_within - 2.0 * theta * cells.cross_within + theta**2 * cells.cov_ss_within
    return np.maximum(within, 0.0) + cells.n * mean_resid**2


def cov_cellwise_hc2(fit: WLSFit, cells: CellData) -> np.ndarray:
    """``B (sum_c s_c^2 W_c'W_c) B`` with the averaged-leverage variance ``s_c^2`` (module doc)."""
    return cellwise_hc2_components(fit, cells).cov()


def cellwise_hc2_components(fit: WLSFit, cells: CellData) -> CellComponents:
    """The same sum kept per cell: ``s_c^2 B W_c'W_c B`` on ``n_c - tr(B W_c'W_c)`` df."""
    theta = float(fit.beta[-1])
    rss_c = cell_rss(cells, theta, cells.mean - fit.fitted)
    B, E = fit.bread, fit.X  # E rows: (x_c, ubar_c); W_c'W_c = n_c e_c e_c' + SSxx_c * last-unit
    trace = cells.n * np.einsum("ij,jk,ik->i", E, B, E) + cells.cov_ss_within * B[-1, -1]
    dof = cells.n - trace
    if np.any(dof <= 1e-10 * cells.n):
        raise ValueError(
            "robust CUPED SE is undefined: a cell's units determine its coefficients exactly "
            "(e.g. a cell with one or two units); use se='pooled' or collect more units"
        )
    s2 = rss_c / dof
    slope = np.broadcast_to(B[-1], E.shape)  # the covariate's within-cell spread loads on B e_last
    return CellComponents((E @ B, slope), (cells.n * s2, cells.cov_ss_within * s2), dof)


def ancova_type2(
    fit: WLSFit, slices: Mapping[Term, slice], cells: CellData, name: Callable[[Term], str]
) -> pd.DataFrame:
    """Type II ANCOVA: each term adjusted for the covariate and the terms not containing it.

    ``RSS(S, x) - SSwithin_y = R_yy(S) - R_uy(S)^2 / R_uu(S)`` (Frisch-Waugh on the cell-mean
    residuals), so differences are taken without the common within-cell SS of ``y``.
    """
    ubar, _ = _centred_means(cells)
    X = fit.X[:, :-1]

    def lof(cols, with_x=True) -> float:
        _, _, ryy, ruu, ruy = _residualize(X[:, cols], cells, ubar)
        return ryy - ruy**2 / ruu if with_x else ryy

    terms = [t for t in slices if t]
    mse = fit.sigma2
    rows = []

    def add(label, ss, df_t):
        f = (ss / df_t) / mse if mse > 0 else np.nan
        p = float(stats.f.sf(f, df_t, fit.df_resid)) if np.isfinite(f) else np.nan
        rows.append({"term": label, "df": float(df_t), "sum_sq": ss, "mean_sq": ss / df_t, "f_value": f, "p_value": p})

    for t in terms:
        base = [()] + [u for u in terms if u != t and not set(t) < set(u)]
        ss = max(lof(columns_of(base, slices)) - lof(columns_of(base + [t], slices)), 0.0)
        add(name(t), ss, slices[t].stop - slices[t].start)
    all_cols = columns_of([()] + terms, slices)
    add(COVARIATE_NAME, max(lof(all_cols, with_x=False) - lof(all_cols), 0.0), 1)
    rows.append(
        {"term": "Residuals", "df": float(fit.df_resid), "sum_sq": fit.rss, "mean_sq": mse, "f_value": np.nan, "p_value": np.nan}
    )
    return pd.DataFrame(rows, columns=["term", "df", "sum_sq", "mean_sq", "f_value", "p_value"])


def cuped_summary(fit: WLSFit, cells: CellData) -> dict:
    """``theta``, pooled within-cell variance reduction and the pre-period imbalance test.

    ``variance_reduction = 1 - SS_within(y - theta x) / SS_within(y)`` summed over cells (the
    pooled within-cell variances share their df, which cancels). ``pre_imbalance_p`` is the
    one-way ANOVA F test of equal covariate means across the observed cells (scipy
    ``f_oneway`` on the units); ``pre_imbalance_flag`` applies docs/architecture.md §5a's ``p < 0.001`` for a
    single metric; across metrics the caller divides the level by their number (Bonferroni).
    """
    theta = float(fit.beta[-1])
    ssy = cells.ss_within_total
    adj = float(np.sum(cell_rss(cells, theta, np.zeros_like(cells.n))))
    k, N = len(cells.n), cells.n_total
    ubar, xg = _centred_means(cells)
    between, within = float(np.sum(cells.n * ubar**2)), float(cells.cov_ss_within.sum())
    if k >= 2 and N > k and within > 0:
        f = (between / (k - 1)) / (within / (N - k))
        p = float(stats.f.sf(f, k - 1, N - k))
    else:
        f = p = float("nan")
    return {
        "theta": theta,
        "variance_reduction": 1.0 - adj / ssy if ssy > 0 else float("nan"),
        "pre_imbalance_p": p,
        "pre_imbalance_f": f,
        "pre_imbalance_flag": bool(p < IMBALANCE_ALPHA),
        "covariate_mean": xg,
    }
