"""Cell ids ("factor=level|factor=level", registry factor order) and planned cell allocations."""

from __future__ import annotations

import itertools

import pandas as pd

from ..registry import Experiment


def cell_id(levels: dict[str, str], experiment: Experiment) -> str:
    return "|".join(f"{f.name}={levels[f.name]}" for f in experiment.factors)


def split_cell_ids(cell_ids: pd.Series, experiment: Experiment) -> pd.DataFrame:
    """One column per factor with its level; raises if a cell id does not fit the registry."""
    rows = []
    names = [f.name for f in experiment.factors]
    for cid in cell_ids:
        parts = dict(part.split("=", 1) for part in str(cid).split("|") if "=" in part)
        if sorted(parts) != sorted(names):
            raise ValueError(f"{experiment.id}: cell {cid!r} does not name exactly the factors {names}")
        rows.append([parts[n] for n in names])
    return pd.DataFrame(rows, columns=names, index=cell_ids.index)


def planned_cells(experiment: Experiment) -> dict[str, float]:
    """Planned share of units per cell: independent factor weights for a full factorial, equal
    shares over the runs of the fraction for a fractional design."""
    factors = experiment.factors
    if experiment.design.type == "fractional":
        from ..stats import fractional_design

        codes = experiment.factor_codes()
        design = fractional_design([codes[f.name] for f in factors], experiment.design.generators)
        shares = {}
        for _, run in design.runs.iterrows():
            levels = {f.name: f.levels[0] if run[codes[f.name]] < 0 else f.levels[1] for f in factors}
            shares[cell_id(levels, experiment)] = 1.0 / len(design.runs)
        return shares
    shares = {}
    for combo in itertools.product(*[list(f.level_weights.items()) for f in factors]):
        levels = {f.name: level for f, (level, _w) in zip(factors, combo)}
        weight = 1.0
        for _level, w in combo:
            weight *= w
        shares[cell_id(levels, experiment)] = weight
    return shares
