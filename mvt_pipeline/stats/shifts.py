"""Shifted sufficient statistics: sums of ``y - K`` instead of ``y``, with the shift ``K`` carried.

Why: ``sum_sq - sum**2 / n`` cancels catastrophically when the mean is large against the spread
(mean/sd 1e8 left no correct digit of the variance). Sums of ``y - K`` with ``K`` near the mean
keep every digit, and every statistic the engine computes is either translation invariant
(within-cell sums of squares and cross products, contrasts) or gets ``K`` back exactly (means,
ratios). The warehouse computes the shifted sums (``agg_cell_stats``; docs/architecture.md);
``unit_cell_stats`` does the same from per-unit rows.

Contract: a frame may carry, beside its sums, a shift column per variable:

* ``shift``      for ``sum`` (of ``y - shift``) and ``sum_sq`` (of ``(y - shift)^2``);
* ``cov_shift``  for ``cov_sum``, ``cov_sum_sq`` (the CUPED covariate ``x``);
* ``den_shift``  for the ratio's ``den_sum``, ``den_sum_sq`` (of ``D - den_shift``);
* ``num_shift``  is a *ratio* ``r0`` (near the metric's ratio): ``num_sum``, ``num_sum_sq`` are sums
  of ``M = N - r0 D``. A plain shift of ``N`` is not enough: the delta-method residual
  ``N - R D`` cancels between terms of order ``R^2 var(D)``, which ``M`` never forms;
* cross products: ``cross_sum`` = sum ``(y - shift)(x - cov_shift)``, ``num_den_sum`` =
  sum ``(N - num_shift D)(D - den_shift)``.

A missing shift column means 0 (plain sums), so hand-built frames keep working. Rows may carry
different shifts; :func:`rebase` moves them to one shift before rows are added together.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

# shift column -> (first-moment column, second-moment column)
MOMENTS: dict[str, tuple[str, str]] = {
    "shift": ("sum", "sum_sq"),
    "cov_shift": ("cov_sum", "cov_sum_sq"),
    "num_shift": ("num_sum", "num_sum_sq"),
    "den_shift": ("den_sum", "den_sum_sq"),
}
# cross-product column -> (shift of its first variable, shift of its second)
CROSSES: dict[str, tuple[str, str]] = {"cross_sum": ("shift", "cov_shift"), "num_den_sum": ("num_shift", "den_shift")}
SHIFT_COLUMNS = tuple(MOMENTS)


def shifts_for(stat_columns: Iterable[str], available: Iterable[str]) -> list[str]:
    """The shift columns that apply to ``stat_columns`` and are present in ``available``."""
    stats, have = set(stat_columns), set(available)
    return [s for s, (first, _) in MOMENTS.items() if first in stats and s in have]


def rebase(vals: Mapping[str, np.ndarray], n: np.ndarray) -> dict[str, np.ndarray]:
    """Move every row to one shift per variable (the first row's), exactly enough to add rows.

    With ``d = K_row - K``: ``sum(y-K) = S + n d``, ``sum(y-K)^2 = Q + 2 d S + n d^2`` and
    ``sum(y-K)(x-K') = C + d S_x + d' S_y + n d d'`` (old ``S``). ``d`` is 0 when the rows share
    their shift, the usual case, and then nothing changes.
    """
    out = {k: np.asarray(v, dtype=float).copy() for k, v in vals.items()}
    if "num_shift" in out and len(out["num_shift"]) and np.any(out["num_shift"] != out["num_shift"][0]):
        _rebase_ratio(out, n)
    deltas = {}
    for s in MOMENTS:
        if s in out and len(out[s]) and s != "num_shift":
            deltas[s] = out[s] - out[s][0]
    if not deltas or not any(np.any(d != 0) for d in deltas.values()):
        return out
    old = {c: out[c].copy() for c in out}
    for cross, (sa, sb) in CROSSES.items():
        if cross in out and (sa in deltas or sb in deltas):
            da, db = deltas.get(sa, 0.0), deltas.get(sb, 0.0)
            sum_a, sum_b = old[MOMENTS[sa][0]], old[MOMENTS[sb][0]]
            out[cross] = old[cross] + da * sum_b + db * sum_a + n * da * db
    for s, d in deltas.items():
        first, second = MOMENTS[s]
        if second in out:
            out[second] = old[second] + 2.0 * d * old[first] + n * d * d
        if first in out:
            out[first] = old[first] + n * d
        out[s] = np.full_like(out[s], out[s][0])
    return out


def _rebase_ratio(out: dict[str, np.ndarray], n: np.ndarray) -> None:
    """Move ``M = N - r D`` to the first row's ``r``: ``M' = M + d D`` with ``d = r - r'``."""
    d = out["num_shift"] - out["num_shift"][0]
    k_d = out.get("den_shift", np.zeros_like(d))
    s_m, q_m, c = out["num_sum"], out["num_sum_sq"], out["num_den_sum"]
    s_d, q_d = out["den_sum"], out["den_sum_sq"]
    sum_d = s_d + n * k_d  # sum D
    sum_dd = q_d + 2.0 * k_d * s_d + n * k_d * k_d  # sum D^2
    sum_md = c + k_d * s_m  # sum M D
    out["num_den_sum"] = c + d * (q_d + k_d * s_d)  # sum M'(D - k_d)
    out["num_sum_sq"] = q_m + 2.0 * d * sum_md + d * d * sum_dd
    out["num_sum"] = s_m + d * sum_d
    out["num_shift"] = np.full_like(d, out["num_shift"][0])


def shift_of(vals: Mapping[str, np.ndarray], first_moment: str, like: np.ndarray) -> np.ndarray:
    """The shift array belonging to ``first_moment`` (zeros when the frame has none)."""
    for s, (first, _) in MOMENTS.items():
        if first == first_moment and s in vals:
            return np.asarray(vals[s], dtype=float)
    return np.zeros_like(np.asarray(like, dtype=float))


def raw_sum(vals: Mapping[str, np.ndarray], first_moment: str, n: np.ndarray) -> np.ndarray:
    """``sum y`` from the shifted sum: ``S + n K`` (for signs, counts and ratios)."""
    s = np.asarray(vals[first_moment], dtype=float)
    return s + n * shift_of(vals, first_moment, s)


def mean_of(vals: Mapping[str, np.ndarray], first_moment: str, n: np.ndarray) -> np.ndarray:
    """Per-row mean ``K + S / n``: the shift added back after the division keeps its digits."""
    s = np.asarray(vals[first_moment], dtype=float)
    return shift_of(vals, first_moment, s) + s / n
