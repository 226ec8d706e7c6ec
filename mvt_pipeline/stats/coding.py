"""Effect (sum-to-zero) coding of factor levels and the model matrix over cells.

Why sum coding: with it the intercept is the equal-weight grand mean of the cells and each
term's coefficients are deviations that average to zero over the other factors, so every
user-facing contrast (a marginal-mean difference, an interaction contrast) is the Kronecker
product of per-factor coding-row differences applied to *one* term's coefficients. It is the
statsmodels ``C(A, Sum)`` convention: level ``j < k-1`` of a ``k``-level factor is the unit
row ``e_j`` and the LAST listed level is the all ``-1`` row. Level order is exactly the order
given by the user.

A model *term* is a tuple of factor indices (``()`` is the intercept, ``(0, 2)`` is ``A:C``).
Its columns on a cell are the Kronecker product of the coding rows of the cell's levels, in
the factor order of the term (the last factor varies fastest).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce
from itertools import combinations
from typing import Mapping, Sequence

import numpy as np

Term = tuple[int, ...]


def sum_coding(n_levels: int) -> np.ndarray:
    """``(k, k-1)`` sum-to-zero coding matrix; the last level is the ``-1`` row."""
    if n_levels < 2:
        raise ValueError(f"a factor needs at least 2 levels, got {n_levels}")
    return np.vstack([np.eye(n_levels - 1), -np.ones((1, n_levels - 1))])


@dataclass(frozen=True)
class FactorSpec:
    """Factors in user order, their levels (as strings) and control levels."""

    names: tuple[str, ...]
    levels: tuple[tuple[str, ...], ...]
    controls: tuple[str, ...]

    @classmethod
    def from_mapping(
        cls, factors: Mapping[str, Sequence[str]], control: Mapping[str, str] | None = None
    ) -> "FactorSpec":
        if not factors:
            raise ValueError("at least one factor is required")
        names = tuple(str(f) for f in factors)
        levels = []
        for f in factors:
            lv = factors[f]
            if isinstance(lv, str):
                raise ValueError(f"levels of factor {f!r} must be a sequence, not the string {lv!r}")
            lv = tuple(str(x) for x in lv)
            if len(lv) < 2:
                raise ValueError(f"factor {f!r} needs at least 2 levels, got {list(lv)}")
            if len(set(lv)) != len(lv):
                raise ValueError(f"factor {f!r} has duplicate levels: {list(lv)}")
            levels.append(lv)
        control = dict(control or {})
        unknown = set(map(str, control)) - set(names)
        if unknown:
            raise ValueError(f"control given for unknown factor(s) {sorted(unknown)}; factors are {list(names)}")
        controls = []
        for f, lv in zip(names, levels):
            c = str(control.get(f, lv[0]))
            if c not in lv:
                raise ValueError(f"control level {c!r} of factor {f!r} is not one of its levels {list(lv)}")
            controls.append(c)
        return cls(names, tuple(levels), tuple(controls))

    def level_index(self, factor: int, level: str) -> int:
        return self.levels[factor].index(level)

    def coding(self, factor: int) -> np.ndarray:
        return sum_coding(len(self.levels[factor]))

    def term_name(self, term: Term) -> str:
        return ":".join(self.names[i] for i in term) if term else "Intercept"


def hierarchical_terms(n_factors: int, max_order: int | None = None) -> list[Term]:
    """All terms up to ``max_order`` (default: all), ordered by order then factor order.

    This is the statsmodels/patsy order for ``A * B * C`` (A, B, C, A:B, A:C, B:C, A:B:C).
    """
    top = n_factors if max_order is None else max_order
    if top < 1:
        raise ValueError(f"max_order must be >= 1, got {max_order}")
    terms: list[Term] = [()]
    for order in range(1, min(top, n_factors) + 1):
        terms.extend(combinations(range(n_factors), order))
    return terms


def term_columns(spec: FactorSpec, term: Term, level_idx: np.ndarray) -> np.ndarray:
    """Columns of ``term`` for cells whose level indices are the rows of ``level_idx``."""
    n = level_idx.shape[0]
    if not term:
        return np.ones((n, 1))
    blocks = [spec.coding(f)[level_idx[:, f]] for f in term]
    return reduce(_rowwise_kron, blocks)


def _rowwise_kron(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a[:, :, None] * b[:, None, :]).reshape(a.shape[0], -1)


def column_names(spec: FactorSpec, term: Term) -> list[str]:
    """Readable coefficient names, e.g. ``A[a0]:B[b1]`` (the level whose coding column it is)."""
    if not term:
        return ["Intercept"]
    per_factor = [[f"{spec.names[f]}[{lv}]" for lv in spec.levels[f][:-1]] for f in term]
    names = per_factor[0]
    for nxt in per_factor[1:]:
        names = [f"{a}:{b}" for a in names for b in nxt]
    return names


def model_matrix(spec: FactorSpec, terms: Sequence[Term], level_idx: np.ndarray):
    """Model matrix over cells plus, per term, the slice of its columns."""
    blocks, slices, start = [], {}, 0
    for t in terms:
        cols = term_columns(spec, t, level_idx)
        blocks.append(cols)
        slices[t] = slice(start, start + cols.shape[1])
        start += cols.shape[1]
    return np.hstack(blocks), slices


def contrast_vector(spec: FactorSpec, term: Term, levels: Sequence[int]) -> np.ndarray:
    """Coefficient weights of the contrast of ``levels`` against the controls, for one term.

    ``kron_F (S_F[l_F] - S_F[control_F])``: for a main effect the difference of marginal
    means, for an interaction the alternating sum of cell means, each averaged with equal
    weight over the full grid of the other factors' levels (sum coding makes every other
    term average out).
    """
    diffs = []
    for f, l in zip(term, levels):
        s = spec.coding(f)
        diffs.append(s[l] - s[spec.level_index(f, spec.controls[f])])
    return reduce(np.kron, diffs)
