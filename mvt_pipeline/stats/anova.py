"""Type II ANOVA table from cell-level fits of sub-models.

Why Type II: in an unbalanced factorial (cells rarely get identical sample sizes) the
sequential (Type I) sums of squares depend on the order of the terms, and Type III tests
main effects in the presence of interactions that contain them. Type II adjusts each term
for every term that does *not* contain it, which respects marginality and is what
statsmodels ``anova_lm(..., typ=2)`` reports:

``SS(T) = RSS(terms not containing T) - RSS(terms not containing T, plus T)``

Each RSS is ``SS_within + sum_c n_c (ybar_c - yhat_c)^2`` of a WLS fit on cell means, so no
per-unit data are needed. ``F = (SS(T) / df_T) / (RSS_full / df_resid)`` (pooled residual
mean square of the full model), p-value from ``F(df_T, df_resid)``.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from .cells import CellData
from .coding import Term
from .wls import WLSFit, columns_of, lack_of_fit_ss


def _contains(outer: Term, inner: Term) -> bool:
    return set(inner) < set(outer)


def type2_anova(
    fit: WLSFit,
    slices: Mapping[Term, slice],
    cells: CellData,
    name: Callable[[Term], str],
) -> pd.DataFrame:
    """Columns ``term, df, sum_sq, mean_sq, f_value, p_value``; last row ``Residuals``."""
    terms: Sequence[Term] = [t for t in slices if t]
    mse = fit.sigma2
    rows = []
    for t in terms:
        base = [()] + [u for u in terms if u != t and not _contains(u, t)]
        rss_without = lack_of_fit_ss(fit.X[:, columns_of(base, slices)], cells)
        rss_with = lack_of_fit_ss(fit.X[:, columns_of(base + [t], slices)], cells)
        ss = max(rss_without - rss_with, 0.0)
        df_t = slices[t].stop - slices[t].start
        f = (ss / df_t) / mse if mse > 0 else np.nan
        p = float(stats.f.sf(f, df_t, fit.df_resid)) if np.isfinite(f) else np.nan
        rows.append({"term": name(t), "df": float(df_t), "sum_sq": ss, "mean_sq": ss / df_t, "f_value": f, "p_value": p})
    rows.append(
        {"term": "Residuals", "df": float(fit.df_resid), "sum_sq": fit.rss, "mean_sq": mse, "f_value": np.nan, "p_value": np.nan}
    )
    return pd.DataFrame(rows, columns=["term", "df", "sum_sq", "mean_sq", "f_value", "p_value"])
