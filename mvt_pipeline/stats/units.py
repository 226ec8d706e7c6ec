"""Per-unit entry point for notebooks: aggregate units to cell sums, then ``analyze_cells``.

Why: analysts often hold a per-unit frame (one row per user) in pandas or polars. The engine
only needs ``n``, ``sum`` and ``sum_sq`` per cell, so the rows are grouped once and the same
exact cell-level method runs; results equal per-unit OLS.
"""

from __future__ import annotations

from typing import Literal, Mapping, Sequence

import numpy as np
import pandas as pd

from .cells import as_pandas
from .factorial import FactorialResult, analyze_cells


def _numeric(data: pd.DataFrame, column: str, what: str) -> pd.Series:
    v = pd.to_numeric(data[column], errors="coerce").astype(float)
    if v.isna().any() or not np.isfinite(v.to_numpy()).all():
        raise ValueError(f"{what} {column!r} has {int(v.isna().sum())} missing or non-numeric values; drop or fill them first")
    return v


def unit_cell_stats(df, outcome: str, factors: Sequence[str], covariate: str | None = None) -> pd.DataFrame:
    """Per-cell ``n``, ``sum``, ``sum_sq`` of ``outcome`` from a pandas or polars frame.

    With ``covariate`` (a column name) also ``cov_sum``, ``cov_sum_sq``, ``cross_sum``.
    """
    names = [str(f) for f in factors]
    data = as_pandas(df, names + [outcome] + ([covariate] if covariate else []))
    y = _numeric(data, outcome, "outcome")
    for f in names:
        if data[f].isna().any():
            raise ValueError(f"factor column {f!r} has missing levels")
        data[f] = data[f].astype(str)
    data = data.assign(_y=y, _y2=y * y)
    if covariate:
        x = _numeric(data, covariate, "covariate")
        data = data.assign(_x=x, _x2=x * x, _xy=x * y)
    g = data.groupby(names, sort=False)
    out = g["_y"].agg(["size", "sum"]).rename(columns={"size": "n"})
    out["sum_sq"] = g["_y2"].sum()
    if covariate:
        out["cov_sum"], out["cov_sum_sq"], out["cross_sum"] = g["_x"].sum(), g["_x2"].sum(), g["_xy"].sum()
    return out.reset_index()


def analyze_units(
    df,
    outcome: str,
    factors: Mapping[str, Sequence[str]],
    *,
    control: Mapping[str, str] | None = None,
    generators: Sequence[str] = (),
    codes: Mapping[str, str] | None = None,
    alpha: float = 0.05,
    se: Literal["robust", "pooled"] = "robust",
    max_order: int | None = None,
    covariate: str | None = None,
    blocks: str | Sequence[str] | None = None,
) -> FactorialResult:
    """:func:`analyze_cells` on a per-unit frame (``outcome`` column plus one column per factor).

    ``covariate``: name of the pre-period column for CUPED (``analyze_cells(covariate=True)``).
    ``blocks``: column(s) of blocking variables (e.g. ``"day"``): main effects only, levels taken
    from the data (sorted), cells are factor x block combinations.
    """
    block_cols = [blocks] if isinstance(blocks, str) else list(blocks or [])
    all_factors = dict(factors)
    if block_cols:
        frame = df if hasattr(df, "columns") else df
        pdf = frame.to_pandas() if hasattr(frame, "to_pandas") else frame
        for b in block_cols:
            all_factors[b] = sorted(str(v) for v in pdf[b].astype(str).unique())
        df = pdf.assign(**{b: pdf[b].astype(str) for b in block_cols})
    cells = unit_cell_stats(df, outcome, list(all_factors), covariate)
    return analyze_cells(
        cells, all_factors, control=control, generators=generators, codes=codes,
        alpha=alpha, se=se, max_order=max_order, covariate=covariate is not None, blocks=block_cols,
    )
