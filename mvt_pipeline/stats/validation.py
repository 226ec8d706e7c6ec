"""One validation path for per-cell sufficient statistics, called at every public entry point.

Why: sums that no data could produce (a NaN, a binary count above ``n``, ``sum_sq < sum^2/n``, a
negative denominator, quantile cells at different ``q``) otherwise flow silently into estimates:
a NaN ``sum_sq`` made a cell "best" with probability 1. Every check here is a property any real
data set has, so a failure means the warehouse or a hand-built frame is wrong; the error names
the field and the cell(s) so the upstream row can be found. Entry-point-specific requirements
(``n >= 2`` for a sample variance, a non-zero denominator, every cell observed) stay with the
functions that need them; ``min_n`` covers the common one.

Kinds and their columns: ``"mean"`` (``n, sum, sum_sq``; ``covariate=True`` adds the CUPED sums),
``"binary"`` (``n, sum``: successes), ``"ratio"`` and ``"quantile"`` (the ``RATIO_COLUMNS`` /
``QUANTILE_COLUMNS`` contracts of ``ratio.py`` / ``quantile.py``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from .cells import COVARIATE_COLUMNS, as_pandas
from .shifts import raw_sum, shifts_for

KIND_COLUMNS = {
    "mean": ("n", "sum", "sum_sq"),
    "binary": ("n", "sum"),
    "ratio": ("n", "num_sum", "den_sum", "num_sum_sq", "den_sum_sq", "num_den_sum"),
    "quantile": ("n", "q", "n_events", "quantile_value", "ci_lower_value", "ci_upper_value", "ci_z",
                 "k_sum", "k_sum_sq", "m_sum_sq", "k_m_sum"),
}
_SUMS = {"mean": ("sum", "sum_sq"), "binary": ("sum",), "ratio": KIND_COLUMNS["ratio"][1:]}
_REL_TOL = 1e-9  # floating tolerance for the moment inequalities (as cells.within_ss)


class InvalidSufficientStatistics(ValueError):
    """Sufficient statistics that no data could produce; ``field`` and ``cells`` say where."""

    def __init__(self, field: str, problem: str, cells: Sequence[str]):
        self.field, self.problem, self.cells = field, problem, list(cells)
        shown = self.cells[:5] + (["..."] if len(self.cells) > 5 else [])
        super().__init__(f"invalid sufficient statistics: {field} {problem} in cell(s) {shown}")


def _labels(df: pd.DataFrame, cell: Sequence[str]) -> np.ndarray:
    if not cell:
        return np.array([f"row {i}" for i in range(len(df))], dtype=object)
    parts = [df[c].astype(str) for c in cell]
    if cell == ["cell_id"]:  # already the pipeline's "factor=level|..." identifier
        return parts[0].to_numpy(dtype=object)
    return pd.Series(["|".join(f"{c}={v}" for c, v in zip(cell, vals)) for vals in zip(*parts)]).to_numpy(dtype=object)


def _tol(scale: np.ndarray) -> np.ndarray:
    return _REL_TOL * np.maximum(np.abs(scale), 1.0)


def validate_cell_stats(cells, kind: str, *, cell: str | Sequence[str] | None = None,
                        covariate: bool = False, min_n: int = 0) -> pd.DataFrame:
    """Raise :class:`InvalidSufficientStatistics` unless every row could come from real data.

    ``cell``: column(s) naming a row in messages (default ``cell_id`` when present, else the row
    position). Returns the statistics as a float frame (same row order, default index).
    """
    if kind not in KIND_COLUMNS:
        raise ValueError(f"kind must be one of {sorted(KIND_COLUMNS)}, got {kind!r}")
    fields = list(KIND_COLUMNS[kind]) + (list(COVARIATE_COLUMNS) if covariate and kind == "mean" else [])
    fields += shifts_for(fields, list(cells.columns))  # shifted sums (shifts.py): checks hold for any shift
    if cell is None:
        cell = ["cell_id"] if "cell_id" in list(cells.columns) else []
    cell = [cell] if isinstance(cell, str) else list(cell)
    missing = [c for c in cell if c not in list(cells.columns)]
    if missing:
        raise ValueError(f"cell-identifying factor column(s) {missing} missing; columns are {list(cells.columns)}")
    df = as_pandas(cells, cell + fields).reset_index(drop=True)
    labels = _labels(df, cell)

    def check(bad, field: str, problem: str) -> None:
        bad = np.asarray(bad, dtype=bool)
        if bad.any():
            raise InvalidSufficientStatistics(field, problem, list(labels[bad]))

    v = {}
    for f in fields:
        v[f] = pd.to_numeric(df[f], errors="coerce").to_numpy(dtype=float)
        check(~np.isfinite(v[f]), f, "is missing, non-numeric or infinite")
    n = v["n"]
    check(n < 0, "n", "is negative")
    check(np.abs(n - np.round(n)) > 1e-9, "n", "is not a whole number of units")
    check(n < min_n, "n", f"is below {min_n} (every cell needs n >= {min_n})")
    empty = n == 0
    for f in _SUMS.get(kind, ()) + (tuple(COVARIATE_COLUMNS) if covariate and kind == "mean" else ()):
        check(empty & (v[f] != 0), f, "is non-zero with n = 0")
    safe_n = np.where(empty, 1.0, n)

    def moments(sq: str, total: np.ndarray, label: str) -> np.ndarray:
        ss = v[sq] - total * (total / safe_n)
        check(ss < -_tol(v[sq]), sq, f"is smaller than {label}**2/n: the sufficient statistics are inconsistent")
        return np.maximum(ss, 0.0)

    def cross(xy: str, x: np.ndarray, y: np.ndarray, ss_x: np.ndarray, ss_y: np.ndarray) -> None:
        c = v[xy] - x * (y / safe_n)
        check(c**2 > ss_x * ss_y + _REL_TOL * np.maximum(np.abs(v[xy]), 1.0) ** 2, xy,
              "is inconsistent with the sums of squares (|within-cell covariance| exceeds the product "
              "of the standard deviations)")

    if kind == "binary":
        s = raw_sum(v, "sum", n)
        check((s < 0) | (s > n), "sum", "is outside [0, n] (a binary sum counts successes)")
        check(np.abs(s - np.round(s)) > 1e-9, "sum", "is not a whole number of successes")
    elif kind == "mean":
        ss_y = moments("sum_sq", v["sum"], "sum")
        if covariate:
            ss_x = moments("cov_sum_sq", v["cov_sum"], "cov_sum")
            cross("cross_sum", v["cov_sum"], v["sum"], ss_x, ss_y)
    elif kind == "ratio":
        check(raw_sum(v, "den_sum", n) < -_tol(v["den_sum"]), "den_sum",
              "is negative (denominators count non-negative things)")
        ss_num = moments("num_sum_sq", v["num_sum"], "num_sum")
        ss_den = moments("den_sum_sq", v["den_sum"], "den_sum")
        cross("num_den_sum", v["num_sum"], v["den_sum"], ss_num, ss_den)
    else:
        _check_quantile(v, n, check)
    return pd.DataFrame(v)


def _check_quantile(v: dict, n: np.ndarray, check) -> None:
    """Quantile rows (see ``quantile.py``): one ``q``, counts consistent with ``k_i <= m_i``."""
    q, big_n, k = v["q"], v["n_events"], v["k_sum"]
    check((q <= 0) | (q >= 1), "q", "is outside (0, 1)")
    check(q != q[0], "q", f"differs between cells (first cell has q = {q[0]:g}): quantiles of different q cannot be contrasted")
    check(v["ci_z"] <= 0, "ci_z", "is not positive")
    for f in ("n_events", "k_sum"):
        check(np.abs(v[f] - np.round(v[f])) > 1e-9, f, "is not a whole number")
    check(big_n < np.maximum(n, 1), "n_events", "is smaller than n (every counted unit has at least one event)")
    check(k > big_n, "k_sum", "exceeds n_events (events at or below the quantile are a subset)")
    # the quantile is the value at rank ceil(N q): at least that many events are at or below it
    check(k < np.clip(np.ceil(big_n * q - 1e-9), 1, None), "k_sum", "is below ceil(n_events * q)")
    check((v["ci_lower_value"] > v["quantile_value"]) | (v["quantile_value"] > v["ci_upper_value"]),
          "quantile_value", "is outside [ci_lower_value, ci_upper_value]")
    tol = _tol(v["m_sum_sq"])
    check(v["k_sum_sq"] < k - tol, "k_sum_sq", "is smaller than k_sum (k_i^2 >= k_i for counts)")
    check(v["m_sum_sq"] < big_n * big_n / np.maximum(n, 1) - tol, "m_sum_sq",
          "is smaller than n_events**2/n: the sufficient statistics are inconsistent")
    check((v["k_sum_sq"] > v["k_m_sum"] + tol) | (v["k_m_sum"] > v["m_sum_sq"] + tol), "k_m_sum",
          "is not between k_sum_sq and m_sum_sq (k_i <= m_i for every unit)")
