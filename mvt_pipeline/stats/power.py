"""Power, minimum detectable effect and required sample size / duration of a factorial design.

Why: a factorial experiment estimates every main effect and interaction from the same units,
but not with the same precision: a 2-way interaction is a difference of differences and needs
about four times the units of a main effect of the same size. Planning must say which effects
the traffic can detect, and for how long the experiment must run.

Estimands are those of :func:`analyze_cells`: a main effect is the difference of equal-weight
marginal means (level vs control), a 2-way interaction the difference of differences
``mu(l,m) - mu(l,c) - mu(c,m) + mu(c,c)`` averaged over the other factors. Each is a contrast
``sum_c w_c ybar_c`` of the cell means, so with a common unit standard deviation ``sd`` and
``n_c`` units in cell ``c``::

    Var = sd^2 * sum_c w_c^2 / n_c.

With equal allocation over ``N`` cells (``n_c = n_total / N``) this is closed form:

* main effect of a ``k_F``-level factor: weights ``+-k_F/N`` on ``2 N/k_F`` cells, so
  ``Var = 2 k_F sd^2 / n_total`` (``4 sd^2 / n_total`` for two levels: two halves of the units);
* 2-way interaction of ``F`` and ``G``: ``Var = 4 k_F k_G sd^2 / n_total`` (``16 sd^2 / n_total``
  for 2x2, i.e. twice the SE of a main effect).

The code computes ``L' (X' diag(n_c) X)^-1 L`` from the engine's own model, which equals the
weights formula for full factorials and also covers unequal allocation (``weights``) and
two-level fractions (``generators``; an alias class is estimated as precisely as a main
effect of a full design with the same number of units per run).

Test: two-sided z-test at ``alpha`` (the robust SEs of ``analyze_cells`` use the normal
reference), ``power = Phi(|d|/SE - z) + Phi(-|d|/SE - z)`` with ``z = z_{1-alpha/2}``. With
``sequential=True`` the critical value is the asymptotic confidence sequence's multiplier at
``n = N*`` (3.04 SE at alpha 0.05, ``sequential.py``): the power to exclude 0 at the planned end
when the CS is tuned to the plan (a lower bound: earlier looks can only add rejections).
``term="main"``/``"interaction2"`` report the *smallest* power (largest MDE) over every
level-vs-control contrast of that order — the one the plan must be sized for.
"""

from __future__ import annotations

import itertools
import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import optimize, stats

from .cells import CellData
from .coding import FactorSpec, contrast_vector
from .design import FractionalDesign, fractional_design
from .factorial import build_model
from .sequential import cs_multiplier


def _spec_and_design(levels, generators, codes):
    if isinstance(levels, FractionalDesign):
        generators = list(levels.generators)
        codes = {l: l for l in levels.letters}
        levels = {l: ["-1", "+1"] for l in levels.letters}
    if not isinstance(levels, Mapping) or not levels:
        raise ValueError("levels must be a non-empty mapping factor -> number of levels (or level list), or a FractionalDesign")
    lv = {}
    for f, v in levels.items():
        if isinstance(v, (int, np.integer)):
            if v < 2:
                raise ValueError(f"factor {f!r} needs at least 2 levels, got {v}")
            lv[f] = [f"{f}{i}" for i in range(int(v))]
        else:
            lv[f] = [str(x) for x in v]
    return FactorSpec.from_mapping(lv), list(generators or ()), codes


def _cells(spec: FactorSpec, generators, codes, n_total: float, weights) -> tuple[CellData, np.ndarray]:
    dims = [len(l) for l in spec.levels]
    idx = np.array(list(itertools.product(*(range(d) for d in dims))), dtype=int)
    if generators:
        letters = [str(codes[f]) if codes else chr(ord("A") + i) for i, f in enumerate(spec.names)]
        design = fractional_design(letters, generators)
        idx = idx[design.contains(np.where(idx == 0, -1, 1))]
    w = np.ones(len(idx)) if weights is None else np.asarray(weights, dtype=float).reshape(-1)
    if w.shape != (len(idx),) or np.any(~(w > 0)):
        raise ValueError(f"weights must be {len(idx)} positive allocation shares, one per cell in grid order")
    n = n_total * w / w.sum()
    cells = CellData(spec, idx, n, np.zeros(len(idx)), np.zeros(len(idx)))
    return cells, idx


def contrast_std_errors(
    levels, n_total: float, sd: float, *, generators: Sequence[str] = (), codes=None, weights=None,
    max_order: int | None = 2,
) -> pd.DataFrame:
    """SE of every level-vs-control contrast (``term, level, order, std_error``) for a plan."""
    if not (n_total > 0 and sd > 0):
        raise ValueError("n_total and sd must be positive")
    spec, generators, codes = _spec_and_design(levels, generators, codes)
    cells, _ = _cells(spec, generators, codes, float(n_total), weights)
    model = build_model(spec, cells, generators, codes, max_order)
    X = model.X
    bread = np.linalg.inv(X.T @ (X * cells.n[:, None]))
    rows = []
    for term, sl in model.slices.items():
        if not term:
            continue
        non_control = [[i for i, l in enumerate(spec.levels[f]) if l != spec.controls[f]] for f in term]
        for combo in itertools.product(*non_control):
            L = np.zeros(X.shape[1])
            L[sl] = contrast_vector(spec, term, combo)
            rows.append({
                "term": spec.term_name(term),
                "level": ":".join(spec.levels[f][l] for f, l in zip(term, combo)),
                "order": len(term),
                "std_error": float(sd * np.sqrt(L @ bread @ L)),
            })
    return pd.DataFrame(rows, columns=["term", "level", "order", "std_error"])


def _crit(alpha: float, sequential: bool) -> float:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return float(cs_multiplier(1.0, 1.0, alpha)) if sequential else float(stats.norm.ppf(1 - alpha / 2))


def _power_z(delta_over_se, crit: float):
    d = np.abs(delta_over_se)
    return stats.norm.cdf(d - crit) + stats.norm.cdf(-d - crit)


def _select(table: pd.DataFrame, term: str) -> float:
    if term == "main":
        sel = table[table["order"] == 1]
    elif term == "interaction2":
        sel = table[table["order"] == 2]
    else:
        sel = table[table["term"] == term]
    if sel.empty:
        raise ValueError(f"no contrast for term {term!r}; terms are {sorted(set(table['term']))}")
    return float(sel["std_error"].max())


def power_factorial(
    levels, n_total: float, effect: float, sd: float, alpha: float = 0.05, term: str = "main", *,
    generators: Sequence[str] = (), codes=None, weights=None, sequential: bool = False,
) -> float:
    """Power to detect an absolute ``effect`` (difference of marginal means, or difference of
    differences for ``term="interaction2"``) with ``n_total`` units. ``levels``: factor ->
    number of levels (or level list), or a :class:`FractionalDesign`. ``term``: ``"main"``,
    ``"interaction2"`` (smallest power over those contrasts) or a term name like ``"A:B"``."""
    table = contrast_std_errors(levels, n_total, sd, generators=generators, codes=codes, weights=weights)
    return float(_power_z(effect / _select(table, term), _crit(alpha, sequential)))


def _multiplier(alpha: float, power: float, sequential: bool) -> float:
    """``d / SE`` at which the two-sided test has the requested power."""
    if not 0 < power < 1:
        raise ValueError(f"power must be in (0, 1), got {power}")
    crit = _crit(alpha, sequential)
    if power <= _power_z(0.0, crit):
        return 0.0
    return float(optimize.brentq(lambda d: _power_z(d, crit) - power, 0.0, crit + 20.0, xtol=1e-12))


def mde_factorial(
    levels, n_total: float, sd: float, alpha: float = 0.05, power: float = 0.8, term: str = "main", *,
    generators: Sequence[str] = (), codes=None, weights=None, sequential: bool = False,
) -> float:
    """Smallest absolute effect detected with probability ``power`` (inverse of :func:`power_factorial`)."""
    table = contrast_std_errors(levels, n_total, sd, generators=generators, codes=codes, weights=weights)
    return _multiplier(alpha, power, sequential) * _select(table, term)


def required_units(
    levels, effect: float, sd: float, alpha: float = 0.05, power: float = 0.8, term: str = "main", *,
    generators: Sequence[str] = (), codes=None, weights=None, sequential: bool = False,
) -> int:
    """Total units for ``power`` at ``effect``: SE scales as ``1/sqrt(n)``, so
    ``n = (k SE_1 / effect)^2`` with ``SE_1`` the SE at one unit; rounded up to a whole
    number of units per cell under equal allocation."""
    if effect == 0:
        raise ValueError("effect must be non-zero")
    table = contrast_std_errors(levels, 1.0, sd, generators=generators, codes=codes, weights=weights)
    n = (_multiplier(alpha, power, sequential) * _select(table, term) / abs(effect)) ** 2
    n_cells = len(_cells(*_spec_and_design(levels, generators, codes), 1.0, weights)[1])
    if weights is None:
        return int(math.ceil(n / n_cells - 1e-9) * n_cells)
    return int(math.ceil(n - 1e-9))


def required_days(
    levels, effect: float, sd: float, daily_units: float, alpha: float = 0.05, power: float = 0.8,
    term: str = "main", **kwargs,
) -> int:
    """Days of traffic needed: ``ceil(required_units / daily_units)`` (new units per day)."""
    if not daily_units > 0:
        raise ValueError("daily_units must be positive")
    n = required_units(levels, effect, sd, alpha, power, term, **kwargs)
    return int(math.ceil(n / daily_units))
