"""Ratio metrics (e.g. clicks per page view) by the delta method, from per-cell sums.

Why: a ratio metric's unit of analysis (the page view) is not the unit of randomization (the
user), so treating page views as independent understates the variance. Per user ``i`` with
numerator ``N_i`` and denominator ``D_i`` the cell ratio is ``R_c = sum N / sum D`` and,
linearising ``R`` around the cell means (Deng, Knoblich & Lu 2018),

``Var(R_c) = (s_N^2 - 2 R_c s_ND + R_c^2 s_D^2) / (n_c * mean_D^2)``

with sample variances/covariance (divisor ``n_c - 1``) over the users of the cell; this is the
variance of the mean of ``(N_i - R_c D_i) / mean_D``. Cells are independent samples, so the
covariance of the cell ratios is diagonal.

Effects are the same contrasts as :func:`analyze_cells`, applied to the cell ratios: the
saturated sum-coded model over the observed cells (full factorial, or one column per alias
class of a two-level fraction) is solved exactly, ``beta = X^-1 R`` with
``Cov(beta) = X^-1 diag(Var R_c) X^-T``, and the shared contrast/Kronecker code turns ``beta``
into main effects (difference of the equal-weight marginal means of the cell ratios) and
interactions (difference of differences). ``control_mean`` is the equal-weight marginal mean
of the cell ratios at the control level, and the relative lift's delta-method SE includes its
uncertainty. Reference distribution: normal (``df = inf``): the delta method is a
large-sample approximation, so its intervals are approximate, not exact, in small cells.

There is no residual sum of squares (the model is saturated on ratios), so ``anova`` is an
empty frame with the usual columns; ``df_resid`` is ``n_total - n_cells``, the within-cell
degrees of freedom behind the sample variances; ``sigma2`` is NaN; ``se`` is ``"delta"``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .cells import CellData, collapse_cells, within_cross, within_ss
from .coding import FactorSpec
from .factorial import FactorialResult, check_alpha
from .independent_cells import fit_independent_cells
from .shifts import mean_of, raw_sum
from .validation import validate_cell_stats

RATIO_COLUMNS = ("n", "num_sum", "den_sum", "num_sum_sq", "den_sum_sq", "num_den_sum")


def ratio_moments(st, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell ratio ``R`` and ``sum_i (N_i - R D_i - mean)^2`` from (shifted) ratio sums.

    With ``M = N - r0 D`` (``num_shift`` = ``r0``, 0 when absent; ``shifts.py``):
    ``R = r0 + delta``, ``delta = sum M / sum D`` and the residual ``N - R D = M - delta D`` gives
    ``ss_M - 2 delta cross_MD + delta^2 ss_D``: no term of order ``R^2 var(D)`` is formed.
    """
    r0 = np.asarray(st["num_shift"], dtype=float) if "num_shift" in st else 0.0
    ss_m = within_ss(st["num_sum_sq"], st["num_sum"], n, "num_sum_sq")
    ss_d = within_ss(st["den_sum_sq"], st["den_sum"], n, "den_sum_sq")
    cross = within_cross(st["num_den_sum"], st["num_sum"], st["den_sum"], n, ss_m, ss_d, "num_den_sum")
    delta = st["num_sum"] / raw_sum(st, "den_sum", n)
    return r0 + delta, np.maximum(ss_m - 2.0 * delta * cross + delta**2 * ss_d, 0.0)


def prepare_ratio_cells(cell_stats, spec: FactorSpec) -> tuple[CellData, np.ndarray, np.ndarray]:
    """Cells with ``mean`` = the cell ratio, its delta-method variance, and the mean denominator.

    ``ss_within`` holds ``sum_i (N_i - R_c D_i)^2``, the within-cell SS of the linearised metric.
    """
    idx, st = collapse_cells(cell_stats, spec, RATIO_COLUMNS)
    n = st["n"]

    def offending(mask: np.ndarray) -> list[dict]:
        return CellData(spec, idx, n, n, n).level_frame()[mask].to_dict("records")[:5]

    if np.any(n < 2):
        raise ValueError(f"every cell needs n >= 2 units for a sample variance; offending cells: {offending(n < 2)}")
    den_mean = mean_of(st, "den_sum", n)
    if np.any(den_mean == 0):
        raise ValueError(f"the denominator sums to 0 in cell(s) {offending(den_mean == 0)}: the ratio is undefined")
    ratio, lin_ss = ratio_moments(st, n)
    var = lin_ss / ((n - 1.0) * n * den_mean**2)
    return CellData(spec, idx, n, ratio, lin_ss), var, den_mean


def analyze_ratio_cells(
    cell_stats,
    factors: Mapping[str, Sequence[str]],
    *,
    control: Mapping[str, str] | None = None,
    generators: Sequence[str] = (),
    codes: Mapping[str, str] | None = None,
    alpha: float = 0.05,
) -> FactorialResult:
    """Factorial effects of a ratio metric from per-cell ``n``, ``num_sum``, ``den_sum``,
    ``num_sum_sq``, ``den_sum_sq``, ``num_den_sum`` (sums over units of ``N``, ``D``, ``N^2``,
    ``D^2``, ``N*D``). Arguments as in :func:`analyze_cells`; method in the module docstring.
    Every cell of the design (or of the fraction) must be observed.
    """
    check_alpha(alpha)
    if isinstance(generators, str):
        generators = [generators]
    spec = FactorSpec.from_mapping(factors, control)
    validate_cell_stats(cell_stats, "ratio", cell=list(spec.names), min_n=2)
    cells, var, den_mean = prepare_ratio_cells(cell_stats, spec)
    return fit_independent_cells(spec, cells, var, generators=generators, codes=codes, alpha=alpha,
                                 se_label="delta", cell_columns={"den_mean": den_mean})
