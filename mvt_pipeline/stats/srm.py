"""Sample-ratio mismatch (SRM): chi-square goodness of fit of observed vs planned allocation.

Why: if cells receive a different share of units than planned, assignment or logging is
broken and every effect estimate is suspect. The design's default flags ``p < 0.001``: the
check re-runs every night on cumulative counts, so over many nights the chance that at least
one night falsely flags a healthy experiment is larger than 0.1% (the nightly tests are
positively correlated, so it grows far slower than nights x 0.1%); the strict level keeps
that false-alarm rate low over an experiment's life while real SRMs, which grow with the
sample, still get caught.

The test is always over the *planned* cells: a planned cell without a row counts 0 units.
Renormalising the plan over the rows that happen to exist would hide exactly the cell whose
traffic was lost (a cell with no units used to give p = 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

SRM_ALPHA = 0.001
MIN_EXPECTED = 5.0  # per-segment tests: Cochran's rule, below it the chi-square p-value is unreliable


@dataclass(frozen=True)
class SRMResult:
    """Pearson chi-square statistic, its degrees of freedom (cells - 1), p-value, expected counts."""

    chi2: float
    df: int
    p_value: float
    expected: np.ndarray | pd.Series
    alpha: float = SRM_ALPHA

    @property
    def flagged(self) -> bool:
        """True when the allocation is implausible at ``alpha`` (default 0.001)."""
        return bool(self.p_value < self.alpha)


def srm_test(
    counts: Sequence[float] | Mapping[str, float] | pd.Series,
    weights: Sequence[float] | Mapping[str, float] | pd.Series,
    *,
    alpha: float = SRM_ALPHA,
) -> SRMResult:
    """Chi-square goodness of fit of ``counts`` against planned ``weights`` (normalised).

    The test always runs over the *planned* cells: keyed (mapping/Series) inputs are aligned by
    key, a planned cell missing from ``counts`` counts 0 units (renormalising over the cells
    that happen to have a row would hide exactly the cell that lost its traffic), and units in
    a cell that is not planned are refused. Sequences are aligned by position.
    """
    keyed = isinstance(counts, (Mapping, pd.Series)) or isinstance(weights, (Mapping, pd.Series))
    if keyed:
        if not (isinstance(counts, (Mapping, pd.Series)) and isinstance(weights, (Mapping, pd.Series))):
            raise ValueError("counts and weights must both be keyed (mapping/Series) or both sequences")
        c, w = pd.Series(counts, dtype=float), pd.Series(weights, dtype=float)
        _refuse_unplanned(c, w.index)
        index = w.index
        c, w = c.reindex(index).fillna(0.0).to_numpy(), w.to_numpy()
    else:
        c, w = np.asarray(counts, dtype=float), np.asarray(weights, dtype=float)
        index = None
        if c.shape != w.shape or c.ndim != 1:
            raise ValueError(f"counts and weights must be 1-D of equal length, got {c.shape} and {w.shape}")
    if c.size < 2:
        raise ValueError("SRM needs at least two planned cells")
    if np.any(~np.isfinite(c)) or np.any(c < 0):
        raise ValueError("counts must be finite and non-negative")
    if np.any(~np.isfinite(w)) or np.any(w <= 0):
        raise ValueError("planned weights must be finite and positive")
    total = c.sum()
    if total <= 0:
        raise ValueError("no units counted")
    expected = total * w / w.sum()
    chi2 = float(np.sum((c - expected) ** 2 / expected))
    dof = int(c.size - 1)
    p = float(stats.chi2.sf(chi2, dof))
    exp_out = pd.Series(expected, index=index) if index is not None else expected
    return SRMResult(chi2, dof, p, exp_out, alpha)


def _refuse_unplanned(counts: pd.Series, planned_index) -> None:
    extra = counts[~counts.index.isin(planned_index) & (counts.fillna(1.0) != 0)]
    if len(extra):
        raise ValueError(f"units counted in cell(s) that are not planned: {sorted(map(str, extra.index))[:5]}")


def _plan(cells: pd.DataFrame, keys: list[str], count: str, weight: str, planned) -> pd.DataFrame:
    """Observed ``count`` per planned cell (0 without a row) beside its planned ``weight``.

    ``planned``: a frame with the ``keys`` columns and ``weight`` (one row per planned cell), a
    mapping ``{cell: weight}`` for a single key column, or None: the distinct cells of ``cells``
    with their ``weight`` column are the plan (so every planned cell must have a row somewhere).
    """
    if planned is None:
        plan = cells.groupby(keys, sort=False)[weight].first()
    elif isinstance(planned, pd.DataFrame):
        missing = [c for c in [*keys, weight] if c not in planned.columns]
        if missing:
            raise ValueError(f"planned allocation is missing column(s) {missing}")
        plan = planned.set_index(keys)[weight]
    else:
        if len(keys) != 1:
            raise ValueError("a planned mapping needs a single cell column; pass a frame for several")
        plan = pd.Series(planned, dtype=float).rename_axis(keys[0])
    if plan.index.duplicated().any():
        raise ValueError("the planned allocation lists a cell twice")
    observed = cells.groupby(keys, sort=False)[count].sum()
    _refuse_unplanned(observed, plan.index)
    return pd.DataFrame({count: observed.reindex(plan.index).fillna(0.0).to_numpy(),
                         weight: plan.to_numpy(dtype=float)}, index=plan.index)


def srm_margins(
    cells: pd.DataFrame,
    factors: Sequence[str],
    *,
    count: str = "n",
    weight: str = "weight",
    planned: pd.DataFrame | None = None,
    alpha: float = SRM_ALPHA,
) -> dict[str, SRMResult]:
    """SRM on each factor's margins: ``{factor: srm_test(level counts, level planned weights)}``.

    ``cells`` has one row per cell with the factor columns and the observed ``count``;
    ``planned`` one row per planned cell with the factor columns and ``weight``. Without
    ``planned`` the rows of ``cells`` (with a ``weight`` column) are the plan, so they must
    include the cells that received no units. A level's planned share is the sum of its cells'
    weights; a planned level without units counts 0. Margins catch a broken flag for one
    factor that the full-table test, spread over many cells, may dilute.
    """
    needed = [*factors, count] + ([weight] if planned is None else [])
    missing = [c for c in needed if c not in cells.columns]
    if missing:
        raise ValueError(f"missing column(s) {missing}; columns are {list(cells.columns)}")
    plan = _plan(cells, list(factors), count, weight, planned).reset_index()
    out = {}
    for f in factors:
        g = plan.groupby(f, sort=False)[[count, weight]].sum()
        out[f] = srm_test(g[count], g[weight], alpha=alpha)
    return out


def srm_segments(
    cells: pd.DataFrame,
    segment: str,
    *,
    cell: Sequence[str] | str,
    count: str = "n",
    weight: str = "weight",
    planned=None,
    alpha: float = SRM_ALPHA,
) -> pd.DataFrame:
    """SRM of the cell table within each value of ``segment``, Bonferroni across segments.

    Why: a logging bug confined to one platform or country is invisible in the pooled table.
    Each segment is tested at ``alpha / k`` (``k`` segments; docs/architecture.md §5a), so the chance that any
    segment of a healthy experiment is flagged on one night stays ``<= alpha``. ``cell``: the
    column(s) identifying a cell (e.g. the factor columns or ``cell_id``). Every segment is
    tested over all planned cells (``planned``: a mapping ``{cell: weight}`` or a frame, see
    :func:`_plan`; default: every cell seen in any segment, with its ``weight``); a cell without
    a row in a segment counts 0 units there. Returns one row per segment: ``segment, chi2, df,
    p_value, alpha, flagged``. Segments with no units, or too few for the chi-square
    approximation (an expected count below :data:`MIN_EXPECTED` in some cell), get NaN and are
    not flagged (but still count in ``k``).
    """
    cell_cols = [cell] if isinstance(cell, str) else list(cell)
    needed = [segment, *cell_cols, count] + ([weight] if planned is None else [])
    missing = [c for c in needed if c not in cells.columns]
    if missing:
        raise ValueError(f"missing column(s) {missing}; columns are {list(cells.columns)}")
    if planned is None:
        planned = cells.groupby(cell_cols, sort=False)[weight].first()
        planned = planned.reset_index() if len(cell_cols) > 1 else planned.to_dict()
    groups = list(cells.groupby(segment, sort=True))
    level = alpha / max(len(groups), 1)
    rows = []
    for seg, part in groups:
        g = _plan(part, cell_cols, count, weight, planned)
        total, w = g[count].sum(), g[weight]
        if len(g) < 2 or total <= 0 or (total * w / w.sum()).min() < MIN_EXPECTED:
            rows.append({"segment": seg, "chi2": np.nan, "df": 0, "p_value": np.nan, "alpha": level, "flagged": False})
            continue
        res = srm_test(g[count].to_numpy(), w.to_numpy(), alpha=level)
        rows.append({"segment": seg, "chi2": res.chi2, "df": res.df, "p_value": res.p_value, "alpha": level, "flagged": res.flagged})
    return pd.DataFrame(rows, columns=["segment", "chi2", "df", "p_value", "alpha", "flagged"])
