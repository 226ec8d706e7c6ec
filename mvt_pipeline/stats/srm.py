"""Sample-ratio mismatch (SRM): chi-square goodness of fit of observed vs planned allocation.

Why: if cells receive a different share of units than planned, assignment or logging is
broken and every effect estimate is suspect. The design's default flags ``p < 0.001``: the
check re-runs every night on cumulative counts, so over many nights the chance that at least
one night falsely flags a healthy experiment is larger than 0.1% (the nightly tests are
positively correlated, so it grows far slower than nights x 0.1%); the strict level keeps
that false-alarm rate low over an experiment's life while real SRMs, which grow with the
sample, still get caught.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

SRM_ALPHA = 0.001


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

    Mappings/Series are aligned by key (the key sets must match); sequences by position.
    """
    keyed = isinstance(counts, (Mapping, pd.Series)) or isinstance(weights, (Mapping, pd.Series))
    if keyed:
        c = pd.Series(counts, dtype=float) if isinstance(counts, (Mapping, pd.Series)) else None
        w = pd.Series(weights, dtype=float) if isinstance(weights, (Mapping, pd.Series)) else None
        if c is None or w is None:
            raise ValueError("counts and weights must both be keyed (mapping/Series) or both sequences")
        if set(c.index) != set(w.index):
            raise ValueError(
                f"counts and weights have different cells: only in counts {sorted(set(c.index) - set(w.index), key=str)}, "
                f"only in weights {sorted(set(w.index) - set(c.index), key=str)}"
            )
        w = w.reindex(c.index)
        index = c.index
        c, w = c.to_numpy(), w.to_numpy()
    else:
        c, w = np.asarray(counts, dtype=float), np.asarray(weights, dtype=float)
        index = None
        if c.shape != w.shape or c.ndim != 1:
            raise ValueError(f"counts and weights must be 1-D of equal length, got {c.shape} and {w.shape}")
    if c.size < 2:
        raise ValueError("SRM needs at least two cells")
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


def srm_margins(
    cells: pd.DataFrame,
    factors: Sequence[str],
    *,
    count: str = "n",
    weight: str = "weight",
    alpha: float = SRM_ALPHA,
) -> dict[str, SRMResult]:
    """SRM on each factor's margins: ``{factor: srm_test(level counts, level planned weights)}``.

    ``cells`` has one row per cell with the factor columns, the observed ``count`` and the
    planned allocation ``weight`` of that cell; a level's planned share is the sum of its
    cells' weights. Margins catch a broken flag for one factor that the full-table test,
    spread over many cells, may dilute.
    """
    missing = [c for c in [*factors, count, weight] if c not in cells.columns]
    if missing:
        raise ValueError(f"missing column(s) {missing}; columns are {list(cells.columns)}")
    out = {}
    for f in factors:
        g = cells.groupby(f, sort=False)[[count, weight]].sum()
        out[f] = srm_test(g[count], g[weight], alpha=alpha)
    return out


def srm_segments(
    cells: pd.DataFrame,
    segment: str,
    *,
    cell: Sequence[str] | str,
    count: str = "n",
    weight: str = "weight",
    alpha: float = SRM_ALPHA,
) -> pd.DataFrame:
    """SRM of the cell table within each value of ``segment``, Bonferroni across segments.

    Why: a logging bug confined to one platform or country is invisible in the pooled table.
    Each segment is tested at ``alpha / k`` (``k`` segments; docs/architecture.md §5a), so the chance that any
    segment of a healthy experiment is flagged on one night stays ``<= alpha``. ``cell``: the
    column(s) identifying a cell (e.g. the factor columns or ``cell_id``). Returns one row per
    segment: ``segment, chi2, df, p_value, alpha, flagged``. Segments with fewer than two
    observed cells get NaN and are not flagged (but still count in ``k``).
    """
    cell_cols = [cell] if isinstance(cell, str) else list(cell)
    missing = [c for c in [segment, *cell_cols, count, weight] if c not in cells.columns]
    if missing:
        raise ValueError(f"missing column(s) {missing}; columns are {list(cells.columns)}")
    groups = list(cells.groupby(segment, sort=True))
    level = alpha / max(len(groups), 1)
    rows = []
    for seg, part in groups:
        g = part.groupby(cell_cols, sort=False)[[count, weight]].sum()
        if len(g) < 2:
            rows.append({"segment": seg, "chi2": np.nan, "df": 0, "p_value": np.nan, "alpha": level, "flagged": False})
            continue
        res = srm_test(g[count].to_numpy(), g[weight].to_numpy(), alpha=level)
        rows.append({"segment": seg, "chi2": res.chi2, "df": res.df, "p_value": res.p_value, "alpha": level, "flagged": res.flagged})
    return pd.DataFrame(rows, columns=["segment", "chi2", "df", "p_value", "alpha", "flagged"])
