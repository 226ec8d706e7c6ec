"""Quantile metrics (e.g. P95 latency) per cell, with a variance that respects clustering.

Why: latency events cluster within users (the randomization unit), so an i.i.d. CI of a quantile
is too narrow. Following Deng, Knoblich & Lu (2018, "Applying the delta method in metric
analytics", section on quantile metrics), the sample quantile ``Q`` of a cell is handled through
the proportion ``P = sum_i k_i / sum_i m_i`` of events at or below ``Q`` (user ``i`` has ``m_i``
events, ``k_i`` of them ``<= Q``). ``P`` is a ratio metric, so its variance under clustering is the
delta-method ratio variance; the i.i.d. variance would be ``q(1-q)/N``. Their ratio is the design
effect ``deff``. The i.i.d. standard error of ``Q`` comes from the distribution-free order-statistic
interval ``[x_(L), x_(U)]`` at ranks ``Nq -+ z sqrt(Nq(1-q))`` (half-width / z, which estimates
``sqrt(q(1-q)/N) / f(Q)`` without a density estimate), and the clustered SE is
``SE_iid * sqrt(deff)``.

Effects are the usual contrasts (main effect = difference of equal-weight marginal means of the cell
quantiles vs control; interactions = difference of differences) with independent cells and a
normal reference, as for ratio metrics. Large-sample approximation: cells need enough events that
the order-statistic interval has distinct end points.

Per-cell inputs (one row per cell): ``n`` (users), ``q``, ``n_events``, ``quantile_value``,
``ci_lower_value``, ``ci_upper_value``, ``ci_z``, and over users ``k_sum``, ``k_sum_sq``,
``m_sum_sq``, ``k_m_sum`` (sums of ``k_i``, ``k_i^2``, ``m_i^2``, ``k_i m_i``).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .cells import CellData, collapse_cells
from .coding import FactorSpec
from .factorial import FactorialResult, check_alpha
from .independent_cells import fit_independent_cells

QUANTILE_COLUMNS = ("n", "q", "n_events", "quantile_value", "ci_lower_value", "ci_upper_value", "ci_z",
                    "k_sum", "k_sum_sq", "m_sum_sq", "k_m_sum")


def quantile_cell_variance(st: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(clustered variance of each cell's sample quantile, design effect)."""
    n, big_n, q, z = st["n"], st["n_events"], st["q"], st["ci_z"]
    se_iid = (st["ci_upper_value"] - st["ci_lower_value"]) / (2.0 * z)
    p_hat = st["k_sum"] / big_n
    m_mean = big_n / n
    ss_k = st["k_sum_sq"] - st["k_sum"] ** 2 / n
    ss_m = st["m_sum_sq"] - big_n**2 / n
    cross = st["k_m_sum"] - st["k_sum"] * big_n / n
    lin = np.maximum(ss_k - 2 * p_hat * cross + p_hat**2 * ss_m, 0.0)
    var_p_cluster = lin / ((n - 1.0) * n * m_mean**2)
    var_p_iid = q * (1 - q) / big_n
    deff = var_p_cluster / var_p_iid
    return se_iid**2 * deff, deff


def analyze_quantile_cells(
    cell_stats,
    factors: Mapping[str, Sequence[str]],
    *,
    control: Mapping[str, str] | None = None,
    generators: Sequence[str] = (),
    codes: Mapping[str, str] | None = None,
    alpha: float = 0.05,
) -> FactorialResult:
    """Factorial effects of a quantile metric from per-cell inputs (module docstring)."""
    check_alpha(alpha)
    if isinstance(generators, str):
        generators = [generators]
    spec = FactorSpec.from_mapping(factors, control)
    frame = pd.DataFrame(cell_stats) if not isinstance(cell_stats, pd.DataFrame) else cell_stats
    if frame.duplicated(subset=list(spec.names)).any():
        raise ValueError("quantile inputs must have exactly one row per cell (quantiles do not add up)")
    idx, st = collapse_cells(frame, spec, QUANTILE_COLUMNS)
    if np.any(st["n"] < 2):
        raise ValueError("every cell needs at least 2 users for a clustered variance")
    if np.any(st["ci_upper_value"] <= st["ci_lower_value"]):
        raise ValueError("a cell's order-statistic interval has equal end points (too few or tied events)")
    var, deff = quantile_cell_variance(st)
    cells = CellData(spec, idx, st["n"], st["quantile_value"], np.zeros_like(st["n"]))
    return fit_independent_cells(spec, cells, var, generators=generators, codes=codes, alpha=alpha,
                                 se_label="delta-quantile", cell_columns={"design_effect": deff})
