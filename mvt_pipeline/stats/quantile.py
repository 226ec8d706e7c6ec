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
normal reference, as for ratio metrics.

Limits. The ranks ``floor(Nq - z s)`` and ``ceil(Nq + z s)``, ``s = sqrt(Nq(1-q))``, are clamped
to ``[1, N]`` by the mart; a clamped rank means the data hold no order statistic far enough out
(for P99 the upper one needs ``N >= z^2 q/(1-q) = 381`` events), and the interval's coverage
collapses (validation.md). :func:`min_events_per_cell` is the smallest ``N`` from which both ranks
fit. A cell below it is flagged ``rank_clamped``: its interval ends at the extreme order statistic
(the mart's clamp), which cannot be widened from the data (``P(x_(N) < Q) = q^N``: for P99 no
order statistic at all is a 97.5% upper bound below 368 events). Its SE is kept as computed, but
every effect row whose contrast uses the cell gets ``status = "quantile_rank_clamped"``
(:data:`RANK_CLAMPED`), which the decision layer reads as inconclusive; other rows are ``"ok"``.

Per-cell inputs (one row per cell): ``n`` (users), ``q``, ``n_events``, ``quantile_value``,
``ci_lower_value``, ``ci_upper_value``, ``ci_z``, and over users ``k_sum``, ``k_sum_sq``,
``m_sum_sq``, ``k_m_sum`` (sums of ``k_i``, ``k_i^2``, ``m_i^2``, ``k_i m_i``).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .cells import CellData, collapse_cells
from .validation import validate_cell_stats
from .coding import FactorSpec
from .factorial import FactorialResult, check_alpha
from .independent_cells import fit_independent_cells

QUANTILE_COLUMNS = ("n", "q", "n_events", "quantile_value", "ci_lower_value", "ci_upper_value", "ci_z",
                    "k_sum", "k_sum_sq", "m_sum_sq", "k_m_sum")
RANK_CLAMPED = "quantile_rank_clamped"  # status of effect / contrast rows that use a clamped cell


def min_events_per_cell(q: float, z: float = 1.959963984540054) -> int:
    """Smallest ``N`` from which the mart's ranks fit in ``[1, N]`` (and do for every larger ``N``).

    Upper: ``Nq + z sqrt(Nq(1-q)) <= N``  <=>  ``N >= z^2 q / (1-q)`` (binds for q >= 0.6; P99 at
    z = 1.96: 381, P95: 73). Lower: ``Nq - z sqrt(Nq(1-q)) >= 1``  <=>
    ``sqrt(N) >= (z sqrt(q(1-q)) + sqrt(z^2 q(1-q) + 4q)) / (2q)`` (median: 8). Both sides grow
    with ``N`` past these roots, so the larger root rounded up is the minimum (then checked
    against the mart's float arithmetic)."""
    if not 0 < q < 1 or not z > 0:
        raise ValueError(f"need 0 < q < 1 and z > 0, got q={q}, z={z}")
    a = z * math.sqrt(q * (1 - q))
    n = max(math.ceil(z * z * q / (1 - q)), math.ceil(((a + math.sqrt(a * a + 4 * q)) / (2 * q)) ** 2), 1)
    while n > 1 and not rank_clamped(np.array([n - 1.0]), q, z)[0]:
        n -= 1
    while rank_clamped(np.array([float(n)]), q, z)[0]:
        n += 1
    return n


def rank_clamped(big_n, q, z) -> np.ndarray:
    """Whether the mart had to clamp a rank of the order-statistic interval (agg_cell_quantiles.sql:
    ``floor(Nq - z s) < 1`` or ``ceil(Nq + z s) > N``): too few events for the interval."""
    big_n = np.asarray(big_n, dtype=float)
    half = z * np.sqrt(big_n * q * (1 - q))
    return (np.floor(big_n * q - half) < 1) | (np.ceil(big_n * q + half) > big_n)


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
    """Factorial effects of a quantile metric from per-cell inputs (module docstring).

    ``effects`` has an extra ``status`` column (``"ok"`` or :data:`RANK_CLAMPED`); ``cell_means``
    has ``design_effect``, ``n_events`` and ``rank_clamped``."""
    check_alpha(alpha)
    if isinstance(generators, str):
        generators = [generators]
    spec = FactorSpec.from_mapping(factors, control)
    frame = pd.DataFrame(cell_stats) if not isinstance(cell_stats, pd.DataFrame) else cell_stats
    validate_cell_stats(frame, "quantile", cell=list(spec.names), min_n=2)
    if frame.duplicated(subset=list(spec.names)).any():
        raise ValueError("quantile inputs must have exactly one row per cell (quantiles do not add up)")
    idx, st = collapse_cells(frame, spec, QUANTILE_COLUMNS)
    if np.any(st["n"] < 2):
        raise ValueError("every cell needs at least 2 users for a clustered variance")
    if np.any(st["ci_upper_value"] <= st["ci_lower_value"]):
        raise ValueError("a cell's order-statistic interval has equal end points (too few or tied events)")
    var, deff = quantile_cell_variance(st)
    clamped = rank_clamped(st["n_events"], st["q"], st["ci_z"])
    cells = CellData(spec, idx, st["n"], st["quantile_value"], np.zeros_like(st["n"]))
    return fit_independent_cells(spec, cells, var, generators=generators, codes=codes, alpha=alpha,
                                 se_label="delta-quantile", flags=(clamped, RANK_CLAMPED),
                                 cell_columns={"design_effect": deff, "n_events": st["n_events"].astype(int),
                                               "rank_clamped": clamped})
