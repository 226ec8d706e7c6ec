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
  ``h_c = x_c' B x_c`` (the same for every unit of a cell); normal reference distribution
  (statsmodels ``fit(cov_type="HC2")``). For a saturated model it is the per-cell variance
  ``s_c^2 / n_c`` (sample variance with ``n_c - 1``), i.e. Welch's standard error for two cells.

Proportions (0/1 outcomes) use the same formulas: ``SS_within_c = n_c p_c (1 - p_c)``, so the
robust variance of a cell mean in a saturated model is ``p_c (1 - p_c) / (n_c - 1)`` (the
``n - 1`` form, slightly wider than ``p(1-p)/n``), with a normal reference distribution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from .cells import CellData
from .coding import Term


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
        lev = np.einsum("ij,jk,ik->i", self.X, self.bread, self.X)
        if np.any(lev >= 1.0 - 1e-10):
            raise ValueError(
                "HC2 is undefined: a cell has leverage 1 (a single unit determines a coefficient, "
                "e.g. a one-unit cell in a saturated model); use se='pooled' or collect more units"
            )
        resid_ss = cells.ss_within + cells.n * (cells.mean - self.fitted) ** 2
        meat = (self.X * (resid_ss / (1.0 - lev))[:, None]).T @ self.X
        return self.bread @ meat @ self.bread


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
