"""Multiple-testing adjustments: Benjamini-Hochberg q-values and Holm adjusted p-values.

Why: a factorial experiment reports many effects (main effects and interactions) times many
metrics; reading each p-value at 5% would produce false winners. BH controls the false
discovery rate (the design's default family is {main effects + interactions} x primary
metrics); Holm controls the family-wise error rate when any false claim is costly.

Both functions are NaN-safe: NaN inputs stay NaN and are not counted in the family size.
A pandas Series keeps its index; anything else comes back as a float numpy array.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd


def _prepare(p) -> tuple[np.ndarray, np.ndarray]:
    arr = np.asarray(p, dtype=float).reshape(-1) if not np.isscalar(p) else np.array([float(p)])
    ok = ~np.isnan(arr)
    if np.any((arr[ok] < 0) | (arr[ok] > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    return arr, ok


def _wrap(p, out: np.ndarray):
    if isinstance(p, pd.Series):
        return pd.Series(out, index=p.index, name=p.name)
    return out


def benjamini_hochberg(p: Sequence[float] | np.ndarray | pd.Series):
    """Benjamini-Hochberg (1995) step-up adjusted p-values (q-values).

    ``q_(i) = min_{j >= i} min(1, m p_(j) / j)`` over the ``m`` non-NaN p-values sorted
    ascending; rejecting ``q <= alpha`` is the BH procedure at FDR level ``alpha``.
    """
    arr, ok = _prepare(p)
    out = np.full(arr.shape, np.nan)
    vals = arr[ok]
    m = vals.size
    if m:
        order = np.argsort(vals, kind="mergesort")
        ranked = vals[order] * m / np.arange(1, m + 1)
        q = np.minimum.accumulate(ranked[::-1])[::-1]
        res = np.empty(m)
        res[order] = np.minimum(q, 1.0)
        out[ok] = res
    return _wrap(p, out)


def holm(p: Sequence[float] | np.ndarray | pd.Series):
    """Holm (1979) step-down adjusted p-values: ``max_{j <= i} min(1, (m - j + 1) p_(j))``."""
    arr, ok = _prepare(p)
    out = np.full(arr.shape, np.nan)
    vals = arr[ok]
    m = vals.size
    if m:
        order = np.argsort(vals, kind="mergesort")
        ranked = np.minimum(vals[order] * (m - np.arange(m)), 1.0)
        res = np.empty(m)
        res[order] = np.maximum.accumulate(ranked)
        out[ok] = res
    return _wrap(p, out)
