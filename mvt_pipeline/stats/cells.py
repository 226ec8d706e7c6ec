"""Validation of per-cell sufficient statistics (``n``, ``sum``, ``sum_sq``) into arrays.

Why: the engine never sees per-unit rows (docs/architecture.md §9: sums are exact and ~10^5 times
faster), so everything it needs must be checked here once: factor columns present, levels
known, ``n >= 1``, and ``sum_sq`` consistent with ``sum`` (a non-negative within-cell sum of
squares). Rows describing the same cell (e.g. one per segment or day) are added together.
CUPED adds the covariate sums (``COVARIATE_COLUMNS``) and ratio metrics use their own sums
(``ratio.py``); both go through the same :func:`collapse_cells`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from .coding import FactorSpec
from .shifts import SHIFT_COLUMNS, rebase, shifts_for

STAT_COLUMNS = ("n", "sum", "sum_sq")
COVARIATE_COLUMNS = ("cov_sum", "cov_sum_sq", "cross_sum")  # sums of x, x^2, x*y per cell


def as_pandas(frame, columns: Sequence[str]) -> pd.DataFrame:
    """A pandas copy of ``columns`` of a pandas or polars frame (polars is not imported)."""
    if isinstance(frame, pd.DataFrame):
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ValueError(f"missing column(s) {missing}; the frame has {list(frame.columns)}")
        return frame.loc[:, list(columns)].copy()
    if type(frame).__module__.startswith("polars") and hasattr(frame, "get_column"):
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ValueError(f"missing column(s) {missing}; the frame has {list(frame.columns)}")
        return pd.DataFrame({c: frame.get_column(c).to_numpy() for c in columns})
    raise TypeError(f"expected a pandas or polars DataFrame, got {type(frame).__name__}")


@dataclass(frozen=True)
class CellData:
    """Observed cells in full-grid order: level indices, sizes, means and within-cell SS.

    The ``cov_*``/``cross_within`` fields are set only for a CUPED/ANCOVA analysis: the mean of
    the pre-period covariate ``x`` per cell, its within-cell SS, and the within-cell cross
    product ``sum (x - xbar)(y - ybar)``.
    """

    spec: FactorSpec
    level_idx: np.ndarray  # (cells, factors) indices into spec.levels
    n: np.ndarray
    mean: np.ndarray
    ss_within: np.ndarray  # sum over units of (y - cell mean)^2
    cov_mean: np.ndarray | None = None
    cov_ss_within: np.ndarray | None = None
    cross_within: np.ndarray | None = None
    # true means are offset + mean (shifted sums, shifts.py): models are fitted on the small
    # relative means and the offsets added back to the level outputs only, keeping every digit
    offset: float = 0.0
    cov_offset: float = 0.0

    @property
    def n_total(self) -> int:
        return int(self.n.sum())

    @property
    def ss_within_total(self) -> float:
        return float(self.ss_within.sum())

    def level_frame(self) -> pd.DataFrame:
        """Factor columns holding the level labels of each cell."""
        return pd.DataFrame(
            {
                name: [self.spec.levels[f][i] for i in self.level_idx[:, f]]
                for f, name in enumerate(self.spec.names)
            }
        )


def collapse_cells(cell_stats, spec: FactorSpec, stat_columns: Sequence[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Validate factor and ``stat_columns`` (first must be ``n``), add up rows of the same cell.

    Returns the level indices of the observed cells in full-grid order and, per statistic, a
    float array aligned with them. Shared by mean, CUPED and ratio metrics so every metric
    kind refuses bad input the same way. Shift columns (``shifts.py``) present in the frame are
    returned too, one value per variable, after the rows were moved to it.
    """
    present = list(cell_stats.columns) if hasattr(cell_stats, "columns") else []
    if isinstance(cell_stats, pd.DataFrame) or hasattr(cell_stats, "get_column"):
        missing_f = [f for f in spec.names if f not in present]
        if missing_f:
            raise ValueError(f"factor column(s) {missing_f} missing from the cell statistics; columns are {present}")
    stat_columns = list(stat_columns) + shifts_for(stat_columns, present)
    columns = list(spec.names) + stat_columns
    df = as_pandas(cell_stats, columns)
    if df.empty:
        raise ValueError("no cells in the cell statistics")
    vals = {}
    for c in stat_columns:
        v = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=float)
        if not np.isfinite(v).all():
            raise ValueError(f"column {c!r} has missing or non-finite values")
        vals[c] = v
    codes = np.empty((len(df), len(spec.names)), dtype=np.int64)
    for f, name in enumerate(spec.names):
        if df[name].isna().any():
            raise ValueError(f"factor column {name!r} has missing levels")
        lookup = {l: i for i, l in enumerate(spec.levels[f])}
        labels = df[name].astype(str).to_numpy()
        codes[:, f] = [lookup.get(l, -1) for l in labels]
        if (codes[:, f] < 0).any():
            unknown = sorted(set(labels[codes[:, f] < 0]))
            raise ValueError(f"level(s) {unknown} of factor {name!r} are not in its levels {list(spec.levels[f])}")
    n = vals["n"]
    if (n < 1).any():
        bad = df.loc[n < 1, list(spec.names) + ["n"]].to_dict("records")
        raise ValueError(f"every cell needs n >= 1; offending rows: {bad[:5]}")
    if not np.allclose(n, np.round(n)):
        raise ValueError("n must be a whole number of units")
    # one key per grid cell, first factor slowest: np.unique sorts into full-grid order
    dims = tuple(len(lv) for lv in spec.levels)
    uniq, inverse = np.unique(np.ravel_multi_index(tuple(codes.T), dims), return_inverse=True)
    idx = np.column_stack(np.unravel_index(uniq, dims)).astype(int)
    vals = rebase(vals, n)
    sums = {c: (np.full(len(uniq), v[0]) if c in SHIFT_COLUMNS else np.bincount(inverse.ravel(), weights=v, minlength=len(uniq)))
            for c, v in vals.items()}
    return idx, sums


def within_ss(sum_sq: np.ndarray, total: np.ndarray, n: np.ndarray, what: str) -> np.ndarray:
    """``sum_sq - total^2 / n``, refusing clearly negative values (inconsistent sums)."""
    ssw = sum_sq - total * (total / n)
    tol = 1e-9 * np.maximum(np.abs(sum_sq), 1.0)
    if np.any(ssw < -tol):
        raise ValueError(f"{what} is smaller than sum^2/n in some cell: the sufficient statistics are inconsistent")
    return np.maximum(ssw, 0.0)


def within_cross(xy_sum: np.ndarray, x_sum: np.ndarray, y_sum: np.ndarray, n: np.ndarray,
                 ss_x: np.ndarray, ss_y: np.ndarray, what: str) -> np.ndarray:
    """Within-cell cross product ``sum xy - sum x sum y / n``, refusing values that no data could
    give (|covariance| above the product of the standard deviations)."""
    cross = xy_sum - x_sum * (y_sum / n)
    scale = np.maximum(np.abs(xy_sum), 1.0)
    if np.any(cross**2 > ss_x * ss_y + 1e-9 * scale**2):
        raise ValueError(
            f"{what} is inconsistent with the sums of squares in some cell "
            "(|within-cell covariance| exceeds the product of the standard deviations)"
        )
    return cross


def prepare_cells(cell_stats, spec: FactorSpec, covariate: bool = False) -> CellData:
    """Check and collapse ``cell_stats`` into a :class:`CellData` (see module docstring).

    With ``covariate=True`` the columns :data:`COVARIATE_COLUMNS` are required too and the
    within-cell covariance matrix of ``(x, y)`` must be positive semi-definite.
    """
    stat_cols = list(STAT_COLUMNS) + (list(COVARIATE_COLUMNS) if covariate else [])
    idx, st = collapse_cells(cell_stats, spec, stat_cols)
    n = st["n"]
    ssw = within_ss(st["sum_sq"], st["sum"], n, "sum_sq")
    offset = float(st["shift"][0]) if "shift" in st else 0.0  # one shift after collapse_cells
    if not covariate:
        return CellData(spec, idx, n, st["sum"] / n, ssw, offset=offset)
    xss = within_ss(st["cov_sum_sq"], st["cov_sum"], n, "cov_sum_sq")
    cross = within_cross(st["cross_sum"], st["cov_sum"], st["sum"], n, xss, ssw, "cross_sum")
    cov_offset = float(st["cov_shift"][0]) if "cov_shift" in st else 0.0
    return CellData(spec, idx, n, st["sum"] / n, ssw, st["cov_sum"] / n, xss, cross, offset, cov_offset)
