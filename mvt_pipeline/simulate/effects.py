"""Factorial contrasts of cell means: the effect estimands the stats engine reports.

Full factorial, factors S with non-control levels (l_F): estimate = equal-weight average over the
other factors' level combinations of the alternating sum over the 2^|S| corners {control, l_F}
(sign + when an even number of factors sit at control). |S| = 1 is the main effect
mu(l) - mu(control); |S| = 2 is mu(l,m) - mu(l,cG) - mu(cF,m) + mu(cF,cG); and so on.

Fractional (two-level factors coded control = -1, other = +1): each distinct product column over the
runs is one estimable effect: mean(runs with product +1) - mean(runs with product -1), named by its
shortest alias (ties: registry factor order); the other words are listed in `aliases`.
"""

from __future__ import annotations

import itertools

import numpy as np

from ..registry import Experiment
from .assignment import design_cells


def full_factorial_effects(exp: Experiment, means: dict[tuple[str, ...], float]) -> list[dict]:
    factors = exp.factors
    out = []
    for order in range(1, len(factors) + 1):
        for subset in itertools.combinations(range(len(factors)), order):
            others = [i for i in range(len(factors)) if i not in subset]
            choices = [[lv for lv in factors[i].levels if lv != factors[i].control] for i in subset]
            for levels in itertools.product(*choices):
                diffs = []
                for other_levels in itertools.product(*[factors[i].levels for i in others]):
                    total = 0.0
                    for corner in itertools.product((False, True), repeat=order):
                        cell = [None] * len(factors)
                        for i, lv in zip(others, other_levels):
                            cell[i] = lv
                        n_control = 0
                        for i, at_level, lv in zip(subset, corner, levels):
                            cell[i] = lv if at_level else factors[i].control
                            n_control += not at_level
                        total += (-1) ** n_control * means[tuple(cell)]
                    diffs.append(total)
                out.append({
                    "term": ":".join(factors[i].name for i in subset),
                    "level": ":".join(levels),
                    "estimate": float(np.mean(diffs)),
                })
    return out


def fractional_effects(exp: Experiment, means: dict[tuple[str, ...], float]) -> list[dict]:
    factors = exp.factors
    runs = design_cells(exp)
    signs = np.asarray([[(-1 if lv == f.control else 1) for f, lv in zip(factors, run)] for run in runs])
    y = np.asarray([means[tuple(run)] for run in runs])
    groups: dict[tuple[int, ...], list[tuple[int, ...]]] = {}
    for order in range(1, len(factors) + 1):
        for subset in itertools.combinations(range(len(factors)), order):
            col = tuple(int(v) for v in np.prod(signs[:, list(subset)], axis=1))
            if len(set(col)) == 1:
                continue  # part of the defining relation
            groups.setdefault(col, []).append(subset)
    out = []
    for col, subsets in groups.items():
        subsets = sorted(subsets, key=lambda s: (len(s), s))
        head = subsets[0]
        c = np.asarray(col)
        estimate = float(y[c == 1].mean() - y[c == -1].mean())
        out.append({
            "term": ":".join(factors[i].name for i in head),
            "level": ":".join([lv for lv in factors[i].levels if lv != factors[i].control][0] for i in head),
            "estimate": estimate,
            "aliases": [":".join(factors[i].name for i in s) for s in subsets[1:]],
        })
    out.sort(key=lambda e: (e["term"].count(":"), [f.name for f in factors].index(e["term"].split(":")[0])))
    return out


def contrasts(exp: Experiment, means: dict[tuple[str, ...], float]) -> list[dict]:
    if exp.design.type == "fractional":
        return fractional_effects(exp, means)
    return full_factorial_effects(exp, means)
