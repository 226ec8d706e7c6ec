"""Weighted least squares on cell means: the per-unit OLS fit computed from cell sums.

Why: every unit in a cell shares the same model row ``x_c``, so per-unit OLS
``y = X beta + e`` has normal equations ``sum_c n_c x_c x_c' beta = sum_c x_c sum_c`` —
exactly WLS of the cell means ``ybar_c`` with weights ``n_c``. The residual sum of squares
splits into the within-cell part (from ``sum_sq``) and the weighted lack of fit of the
cell means: ``RSS = sum_c SS_within_c + sum_c n_c (ybar_c - yhat_c)^2``, ``df = N - p``.

Two covariance estimators:

* ``pooled`` — classic OLS ``sigma^2 (X'WX)^-1`` with ``sigma^2 = RSS / (N - p)``; use the
  t distribution with ``N - p`` df (statsmodels ``ols(...).fit()``). Assumes one common
  variance in all cells.
* ``robust`` — HC2 sandwich ``B M B`` with ``B = (X'WX)^-1`` and
  ``M = sum_c x_c x_c' (SS_within_c + n_c (ybar_c - yhat_c)^2) / (1 - h_c)``, leverage
  ``h_c = x_c' B x_c`` (the same for every unit of a cell); statsmodels ``fit(cov_type="HC2")``.
  For a saturated model it is the per-cell variance ``s_c^2 / n_c`` (sample variance with
  ``n_c - 1``), i.e. Welch's standard error for two cells.

Reference distribution of a robust contrast ``L'beta`` (:class:`CellComponents`): the sandwich
is a sum of per-cell shares ``u_c``, each estimated from one cell's residuals on
``d_c = n_c (1 - h_c)`` df (``n_c - 1`` when saturated), so its Welch-Satterthwaite df is
``(sum u_c)^2 / sum (u_c^2 / d_c)`` (Welch's df for two cells). Small cells get Student t with
that df; at ``df >= NORMAL_DF`` the normal reference is kept. The df is at least the smallest
contributing ``d_c`` (``>= n_c - 1``; ``n_c - 2`` with the CUPED covariate), so cells of more than
``NORMAL_DF + 2`` units are never affected.

Proportions (0/1 outcomes) use the same formulas: ``SS_within_c = n_c p_c (1 - p_c)``, so the
robust variance of a cell mean in a saturated model is ``p_c (1 - p_c) / (n_c - 1)`` (the
``n - 1`` form, slightly wider than ``p(1-p)/n``), with the same reference distribution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from .cells import CellData
from .coding import Term

NORMAL_DF = 60.0  # Welch-Satterthwaite df at or above this: normal reference (z loses <= 0.5 pp of coverage)


@dataclass(frozen=True)
class CellComponents:
    """A robust ``Cov(beta) = sum_j F_j' diag(w_j) F_j`` kept per cell (row ``c`` of every
    ``F_j``/``w_j`` is cell ``c``'s share, estimated on ``cell_df[c]`` residual df), so that each
    contrast gets its Welch-Satterthwaite df."""

    loadings: tuple[np.ndarray, ...]
    weights: tuple[np.ndarray, ...]
    cell_df: np.ndarray

    def cov(self) -> np.ndarray:
        return sum((F * w[:, None]).T @ F for F, w in zip(self.loadings, self.weights))

    def df(self, L: np.ndarray) -> float:
        """Welch-Satterthwaite df of ``L'beta``; ``inf`` (normal) at or above :data:`NORMAL_DF`."""
        u = sum(w * (F @ L) ** 2 for F, w in zip(self.loadings, self.weights))
        den = float(np.sum(u**2 / self.cell_df))
        df = float(np.sum(u)) ** 2 / den if den > 0 else float("inf")
        return df if df < NORMAL_DF else float("inf")


@dataclass(frozen=True)
class WLSFit:
    """Coefficients, ``(X'WX)^-1``, fitted cell means, residual SS and df of one model."""

    X: np.ndarray
    beta: np.ndarray
    bread: np.ndarray  # (X'WX)^-1
    fitted: np.ndarray
    rss: float
    df_resid: int

    @property
    def sigma2(self) -> float:
        return self.rss / self.df_resid

    def cov_pooled(self) -> np.ndarray:
        return self.sigma2 * self.bread

    def cov_hc2(self, cells: CellData) -> np.ndarray:
        return self.hc2_components(cells).cov()

    def hc2_components(self, cells: CellData) -> CellComponents:
        """HC2 per cell: ``(B x_c)(B x_c)' * resid_ss_c / (1 - h_c)`` on ``n_c (1 - h_c)`` df."""
        lev = np.einsum("ij,jk,ik->i", self.X, self.bread, self.X)
        if np.any(lev >= 1.0 - 1e-10):
            raise ValueError(
                "HC2 is undefined: a cell has leverage 1 (a single unit determines a coefficient, "
                "e.g. a one-unit cell in a saturated model); use se='pooled' or collect more units"
            )
        resid_ss = cells.ss_within + cells.n * (cells.mean - self.fitted) ** 2
        return CellComponents((self.X @ self.bread,), (resid_ss / (1.0 - lev),), cells.n * (1.0 - lev))


def _weighted(X: np.ndarray, cells: CellData) -> np.ndarray:
    return X * np.sqrt(cells.n)[:, None]


def nonestimable_terms(X: np.ndarray, slices: Mapping[Term, slice], cells: CellData) -> list[Term]:
    """Terms whose columns add less rank than their width, adding terms in model order."""
    Xw = _weighted(X, cells)
    bad, cols, rank = [], [], 0
    for term, sl in slices.items():
        trial = cols + list(range(sl.start, sl.stop))
        r = np.linalg.matrix_rank(Xw[:, trial])
        if r < rank + (sl.stop - sl.start):
            bad.append(term)
        cols, rank = trial, r
    return bad


def fit_wls(X: np.ndarray, cells: CellData) -> WLSFit:
    """Full-rank WLS fit; the caller has already checked estimability and ``df_resid > 0``."""
    xtwx = X.T @ (X * cells.n[:, None])
    bread = np.linalg.inv(xtwx)
    bread = (bread + bread.T) / 2.0
    beta = bread @ (X.T @ (cells.n * cells.mean))
    fitted = X @ beta
    rss = cells.ss_within_total + float(np.sum(cells.n * (cells.mean - fitted) ** 2))
    return WLSFit(X, beta, bread, fitted, rss, cells.n_total - X.shape[1])


def lack_of_fit_ss(X: np.ndarray, cells: CellData) -> float:
    """``sum_c n_c (ybar_c - yhat_c)^2`` of a (possibly rank-deficient) sub-model.

    A sub-model's RSS is this plus the within-cell SS, which is the same for every model;
    differences of RSS are taken on this part alone to avoid cancellation.
    """
    w = np.sqrt(cells.n)
    coef, *_ = np.linalg.lstsq(X * w[:, None], cells.mean * w, rcond=None)
    return float(np.sum(cells.n * (cells.mean - X @ coef) ** 2))


def columns_of(terms: Sequence[Term], slices: Mapping[Term, slice]) -> list[int]:
    return [i for t in terms for i in range(slices[t].start, slices[t].stop)]
