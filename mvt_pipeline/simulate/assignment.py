"""Deterministic, experiment-salted assignment of units to cells (hash_version "v1").

Full factorial: each factor is hashed on its own,
  u = int(sha256(f"{experiment.id}:{factor.name}:{unit_id}").hexdigest()[:15], 16) / 16**15
and the level is picked by the cumulative level weights.
Fractional: one hash of f"{experiment.id}:run:{unit_id}" picks one run of the fraction (uniform unless
weights are overridden; overridden per-factor weights weight each run by the product of its base
factors' level weights).
"""

from __future__ import annotations

import hashlib
import itertools
from typing import Iterable, Sequence

import numpy as np

from ..registry import Experiment

HASH_VERSION = "v1"
_SCALE = float(16**15)


def unit_hash(salt: str, unit_ids: Iterable[str]) -> np.ndarray:
    """Uniform [0, 1) numbers, one per unit, from sha256(f"{salt}:{unit_id}")."""
    out = [int(hashlib.sha256(f"{salt}:{u}".encode()).hexdigest()[:15], 16) for u in unit_ids]
    return np.asarray(out, dtype=np.float64) / _SCALE


def _pick(u: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    w = np.asarray(weights, dtype=float)
    cum = np.cumsum(w / w.sum())
    cum[-1] = 1.0 + 1e-12
    return np.searchsorted(cum, u, side="right")


def coded_level(experiment: Experiment, factor: str, level: str) -> int:
    """±1 coding: the control level is -1, the other level +1 (two-level factors)."""
    return -1 if experiment.factor(factor).control == level else 1


def fraction_runs(experiment: Experiment) -> list[tuple[str, ...]]:
    """The runs of a fractional design as level tuples in registry factor order.

    Base factors (not on the left of a generator) form a full factorial in ±1 (standard order, the
    first base factor alternating slowest); a generated factor is the product of its letters.
    """
    codes = experiment.factor_codes()
    gens = {}
    for g in experiment.design.generators:
        lhs, rhs = g.replace(" ", "").split("=")
        gens[lhs] = rhs
    base = [f.name for f in experiment.factors if codes[f.name] not in gens]
    runs = []
    for signs in itertools.product((-1, 1), repeat=len(base)):
        sign_of = {codes[n]: s for n, s in zip(base, signs)}
        for lhs, rhs in gens.items():
            sign_of[lhs] = int(np.prod([sign_of[c] for c in rhs]))
        levels = []
        for f in experiment.factors:
            s = sign_of[codes[f.name]]
            other = [lv for lv in f.levels if lv != f.control][0]
            levels.append(f.control if s == -1 else other)
        runs.append(tuple(levels))
    return runs


def design_cells(experiment: Experiment) -> list[tuple[str, ...]]:
    """All cells of the design (level tuples in registry factor order)."""
    if experiment.design.type == "fractional":
        return fraction_runs(experiment)
    return list(itertools.product(*[f.levels for f in experiment.factors]))


def cell_id(experiment: Experiment, levels: Sequence[str]) -> str:
    return "|".join(f"{f.name}={lv}" for f, lv in zip(experiment.factors, levels))


def cell_probabilities(experiment: Experiment, weights_override: dict | None = None) -> list[float]:
    """Expected share of each design cell (same order as design_cells)."""
    cells = design_cells(experiment)
    w = _factor_weights(experiment, weights_override)
    if experiment.design.type == "fractional":
        raw = _run_weights(experiment, cells, w)
        return list(raw / raw.sum())
    probs = []
    for cell in cells:
        p = 1.0
        for f, lv in zip(experiment.factors, cell):
            p *= w[f.name][lv]
        probs.append(p)
    return probs


def _factor_weights(experiment: Experiment, override: dict | None) -> dict[str, dict[str, float]]:
    out = {}
    for f in experiment.factors:
        if override and f.name in override:
            ws = np.asarray(override[f.name], dtype=float)
            if len(ws) != len(f.levels) or (ws <= 0).any():
                raise ValueError(f"weights for {experiment.id}.{f.name} need one positive number per level")
            out[f.name] = dict(zip(f.levels, ws / ws.sum()))
        else:
            out[f.name] = dict(f.level_weights)
    return out


def _run_weights(experiment: Experiment, runs, w) -> np.ndarray:
    codes = experiment.factor_codes()
    gen_lhs = {g.replace(" ", "").split("=")[0] for g in experiment.design.generators}
    base = [i for i, f in enumerate(experiment.factors) if codes[f.name] not in gen_lhs]
    out = []
    for run in runs:
        p = 1.0
        for i in base:
            p *= w[experiment.factors[i].name][run[i]]
        out.append(p)
    return np.asarray(out)


def planned_weights(experiment: Experiment) -> dict[str, dict[str, float]]:
    return {f.name: dict(f.level_weights) for f in experiment.factors}


def marginal_weights(experiment: Experiment, weights_override: dict | None = None) -> dict[str, dict[str, float]]:
    """Expected per-factor level shares given the (possibly overridden) allocation."""
    cells = design_cells(experiment)
    probs = cell_probabilities(experiment, weights_override)
    out = {f.name: {lv: 0.0 for lv in f.levels} for f in experiment.factors}
    for cell, p in zip(cells, probs):
        for f, lv in zip(experiment.factors, cell):
            out[f.name][lv] += p
    return out


def assign_cell_index(unit_ids, experiment: Experiment, weights_override: dict | None = None) -> np.ndarray:
    """Index into design_cells(experiment) for every unit."""
    unit_ids = [str(u) for u in unit_ids]
    cells = design_cells(experiment)
    if experiment.design.type == "fractional":
        w = _factor_weights(experiment, weights_override)
        rw = _run_weights(experiment, cells, w)
        return _pick(unit_hash(f"{experiment.id}:run", unit_ids), rw)
    idx = np.zeros(len(unit_ids), dtype=np.int64)
    w = _factor_weights(experiment, weights_override)
    for f in experiment.factors:
        lvl = _pick(unit_hash(f"{experiment.id}:{f.name}", unit_ids), [w[f.name][lv] for lv in f.levels])
        idx = idx * len(f.levels) + lvl
    return idx


def assign_cells(unit_ids, experiment: Experiment, weights_override: dict | None = None) -> dict[str, np.ndarray]:
    """{factor: array of levels}, deterministic per (experiment, factor, unit)."""
    idx = assign_cell_index(unit_ids, experiment, weights_override)
    cells = np.asarray(design_cells(experiment), dtype=object)
    if len(idx) == 0:
        return {f.name: np.asarray([], dtype=object) for f in experiment.factors}
    chosen = cells[idx]
    return {f.name: chosen[:, i] for i, f in enumerate(experiment.factors)}
