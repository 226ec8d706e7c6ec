"""Per-unit entry points for notebooks: aggregate units (or events) to the engine's cell inputs.

Why: analysts often hold a per-unit frame (one row per user) in pandas or polars. The engine
only needs ``n``, ``sum`` and ``sum_sq`` per cell, so the rows are grouped once and the same
exact cell-level method runs; results equal per-unit OLS. :func:`quantile_cell_stats` does the
same for quantile metrics from per-event rows, with exactly the definitions of the dbt model
``agg_cell_quantiles`` (a notebook gets the ranks, values and counts the nightly pipeline gets).
"""

from __future__ import annotations

import math
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


def unit_cell_stats(df, outcome: str, factors: Sequence[str], covariate: str | None = None,
                    *, shifted: bool = False) -> pd.DataFrame:
    """Per-cell ``n``, ``sum``, ``sum_sq`` of ``outcome`` from a pandas or polars frame.

    With ``covariate`` (a column name) also ``cov_sum``, ``cov_sum_sq``, ``cross_sum``.
    ``shifted=True``: sums of ``y - shift`` with ``shift`` the overall mean (and ``cov_shift`` for
    the covariate), carried as columns (``shifts.py``): exact variances when the mean is large
    against the spread; the engine reads both forms.
    """
    names = [str(f) for f in factors]
    data = as_pandas(df, names + [outcome] + ([covariate] if covariate else []))
    y = _numeric(data, outcome, "outcome")
    for f in names:
        if data[f].isna().any():
            raise ValueError(f"factor column {f!r} has missing levels")
        data[f] = data[f].astype(str)
    y_shift = float(y.mean()) if shifted and len(y) else 0.0
    y = y - y_shift
    data = data.assign(_y=y, _y2=y * y)
    if covariate:
        x = _numeric(data, covariate, "covariate")
        x_shift = float(x.mean()) if shifted and len(x) else 0.0
        x = x - x_shift
        data = data.assign(_x=x, _x2=x * x, _xy=x * y)
    g = data.groupby(names, sort=False)
    out = g["_y"].agg(["size", "sum"]).rename(columns={"size": "n"})
    out["sum_sq"] = g["_y2"].sum()
    if covariate:
        out["cov_sum"], out["cov_sum_sq"], out["cross_sum"] = g["_x"].sum(), g["_x2"].sum(), g["_xy"].sum()
    if shifted:
        out["shift"] = y_shift
        if covariate:
            out["cov_shift"] = x_shift
    return out.reset_index()


QUANTILE_CI_Z = 1.959963984540054  # dbt var quantile_ci_z: two-sided 95% order-statistic interval


def _clamp(rank: float, n: int) -> int:
    return int(min(max(rank, 1), n))


def quantile_cell_stats(df, outcome: str, factors: Sequence[str], q: float, *, unit: str | None = None,
                        z: float = QUANTILE_CI_Z) -> pd.DataFrame:
    """Per-cell inputs of :func:`analyze_quantile_cells` from per-event rows, as ``agg_cell_quantiles``.

    ``unit``: the column of the randomization unit (user) of each event; without it every row is
    its own unit. Per cell of ``N`` events: ``quantile_value`` is the value at rank
    ``ceil(N q)`` of the sorted values, ``ci_lower_value`` / ``ci_upper_value`` those at ranks
    ``floor(N q - z sqrt(N q (1-q)))`` / ``ceil(N q + z sqrt(N q (1-q)))`` (all clamped to
    ``[1, N]``), and over units ``k_sum, k_sum_sq, m_sum_sq, k_m_sum`` (``m_i`` events of unit
    ``i``, ``k_i`` of them ``<= quantile_value``). ``n`` is the number of units; the mart's other
    columns (``n_units``, ranks, min/max, value sums) are included too.
    """
    if not 0 < q < 1:
        raise ValueError(f"q must be in (0, 1), got {q}")
    names = [factors] if isinstance(factors, str) else [str(f) for f in factors]
    data = as_pandas(df, names + [outcome] + ([unit] if unit else []))
    data["_y"] = _numeric(data, outcome, "outcome")
    if unit and data[unit].isna().any():
        raise ValueError(f"unit column {unit!r} has missing values")
    data["_u"] = data[unit] if unit else np.arange(len(data))
    for f in names:
        if data[f].isna().any():
            raise ValueError(f"factor column {f!r} has missing levels")
        data[f] = data[f].astype(str)
    rows = []
    for key, cell in data.groupby(names, sort=False):
        x = np.sort(cell["_y"].to_numpy())
        big_n = len(x)
        half = z * math.sqrt(big_n * q * (1 - q))  # same operation order as the SQL
        point = _clamp(math.ceil(big_n * q), big_n)
        lower, upper = _clamp(math.floor(big_n * q - half), big_n), _clamp(math.ceil(big_n * q + half), big_n)
        qv = x[point - 1]
        per_unit = cell.assign(_le=(cell["_y"] <= qv).astype(np.int64)).groupby("_u", sort=False)["_le"].agg(["sum", "size"])
        k, m = per_unit["sum"].to_numpy(np.int64), per_unit["size"].to_numpy(np.int64)
        rows.append({
            **dict(zip(names, key if isinstance(key, tuple) else (key,))),
            "n": len(per_unit), "q": float(q), "n_events": big_n, "quantile_value": qv,
            "ci_lower_value": x[lower - 1], "ci_upper_value": x[upper - 1], "ci_z": float(z),
            "k_sum": int(k.sum()), "k_sum_sq": int((k * k).sum()), "m_sum_sq": int((m * m).sum()),
            "k_m_sum": int((k * m).sum()), "n_units": len(per_unit), "rank_point": point, "rank_lower": lower,
            "rank_upper": upper, "min_value": x[0], "max_value": x[-1], "value_sum": float(x.sum()),
            "value_sum_sq": float((x * x).sum()),
        })
    return pd.DataFrame(rows)


def _levels_from_data(df, names: Sequence[str], control: Mapping[str, str] | None) -> dict[str, list[str]]:
    """Sorted levels seen in the data, the control (registry default) first when given."""
    data = as_pandas(df, list(names))
    out = {}
    for f in names:
        levels = sorted(str(v) for v in data[f].dropna().astype(str).unique())
        c = (control or {}).get(f)
        out[f] = ([str(c)] + [l for l in levels if l != str(c)]) if c is not None and str(c) in levels else levels
    return out


def analyze_units(
    df,
    outcome: str,
    factors: Mapping[str, Sequence[str]] | Sequence[str] | str,
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

    ``factors``: ``{factor: levels}`` as in :func:`analyze_cells`, or just the factor names (a
    list, or one name): levels are then taken from the data, sorted, with ``control[f]`` first
    when given (otherwise the first sorted level is the control).
    ``covariate``: name of the pre-period column for CUPED (``analyze_cells(covariate=True)``).
    ``blocks``: column(s) of blocking variables (e.g. ``"day"``): main effects only, levels taken
    from the data (sorted), cells are factor x block combinations.
    """
    block_cols = [blocks] if isinstance(blocks, str) else list(blocks or [])
    if isinstance(factors, str):
        factors = [factors]
    if not isinstance(factors, Mapping):
        factors = _levels_from_data(df, [str(f) for f in factors], control)
    all_factors = dict(factors)
    if block_cols:
        frame = df if hasattr(df, "columns") else df
        pdf = frame.to_pandas() if hasattr(frame, "to_pandas") else frame
        for b in block_cols:
            all_factors[b] = sorted(str(v) for v in pdf[b].astype(str).unique())
        df = pdf.assign(**{b: pdf[b].astype(str) for b in block_cols})
    cells = unit_cell_stats(df, outcome, list(all_factors), covariate, shifted=True)
    return analyze_cells(
        cells, all_factors, control=control, generators=generators, codes=codes,
        alpha=alpha, se=se, max_order=max_order, covariate=covariate is not None, blocks=block_cols,
    )
