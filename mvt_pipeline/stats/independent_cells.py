"""Factorial contrasts of per-cell estimates that come with their own variances (ratio and
quantile metrics): cells are independent samples, so the estimates' covariance is diagonal and
the saturated sum-coded model over the observed cells is solved exactly, ``beta = X^-1 m`` with
``Cov(beta) = X^-1 diag(v) X^-T``. The shared contrast code then gives the same main effects and
interactions as :func:`analyze_cells`, with a normal reference distribution (the variances are
delta-method approximations, large-sample by construction)."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .cells import CellData
from .coding import FactorSpec, column_names
from .factorial import FactorialResult, build_model, effect_rows, finish_effects

ANOVA_COLUMNS = ["term", "df", "sum_sq", "mean_sq", "f_value", "p_value"]


def fit_independent_cells(
    spec: FactorSpec, cells: CellData, variance: np.ndarray, *, generators: Sequence[str],
    codes: Mapping[str, str] | None, alpha: float, se_label: str, cell_columns: Mapping[str, np.ndarray],
    flags: tuple[np.ndarray, str] | None = None,
) -> FactorialResult:
    """``cells.mean`` holds the per-cell estimates and ``variance`` their variances;
    ``cell_columns`` are extra per-cell outputs for ``cell_means`` (e.g. a design effect);
    ``flags = (flagged cells, status)`` marks the effect rows that use a flagged cell."""
    model = build_model(spec, cells, generators, codes, None)
    X_inv = np.linalg.inv(model.X)  # estimable + saturated => square and invertible
    beta = X_inv @ cells.mean
    cov = (X_inv * variance[None, :]) @ X_inv.T
    rows = effect_rows(spec, cells, beta, cov, model.slices, model.alias_labels, lambda L: float("inf"), alpha, flags)
    names = [c for t in model.terms for c in column_names(spec, t)]
    cell_frame = cells.level_frame()
    cell_frame["n"] = cells.n.astype(int)
    cell_frame["mean"] = cells.mean
    cell_frame["std_error"] = np.sqrt(variance)
    for name, values in cell_columns.items():
        cell_frame[name] = values
    return FactorialResult(
        effects=finish_effects(rows),
        anova=pd.DataFrame(columns=ANOVA_COLUMNS),
        cell_means=cell_frame,
        df_resid=int(cells.n_total - len(cells.n)),
        n_total=cells.n_total,
        params=pd.Series(beta, index=names),
        cov=pd.DataFrame(cov, index=names, columns=names),
        se=se_label,
        alpha=alpha,
        sigma2=float("nan"),
        design=model.design,
    )
