"""Factorial effects of one experiment x one metric from per-cell sufficient statistics.

Model: per-unit ``y = X beta + e`` with effect (sum-to-zero) coding (see ``coding.py``) and
all interactions up to ``max_order`` (full factorial; default all) or, for a two-level
fraction, one column per alias class (see ``design.py``; saturated on the runs). Fitted by
WLS on cell means (``wls.py``), which equals per-unit OLS exactly.

The ``effects`` table reports *contrasts a reader can act on*, not raw coefficients:

* main effect ``F``, level ``l``: marginal mean at ``F=l`` minus marginal mean at the control,
  each marginal mean the equal-weight average of fitted cell means over the full grid of the
  other factors;
* interaction ``F:G``, level ``l:m``: the equal-weight average over the other factors of
  ``mu(l,m) - mu(l,cG) - mu(cF,m) + mu(cF,cG)``; higher orders the alternating sum.

``se="robust"`` (default): HC2 sandwich; reference Student t with each contrast's
Welch-Satterthwaite df (``wls.CellComponents``) when that df is below ``wls.NORMAL_DF`` (small
cells), else normal (z, ``df = inf``): small cells must not get z intervals.
``se="pooled"``: OLS ``sigma^2 (X'WX)^-1`` with one pooled variance, t with ``N - p`` df.
Relative lift (main effects only) is ``estimate / control_mean`` with a delta-method standard
error that uses the covariance of (estimate, control_mean) — both linear in ``beta`` — so the
control mean's own uncertainty widens the interval; its p-value tests ``lift = 0`` with the
same reference distribution as the absolute effect.

``covariate=True`` adds the pre-period covariate with one common slope (CUPED / ANCOVA,
``cuped.py``); contrasts are then of cell means adjusted to the grand mean of the covariate.
Ratio metrics reuse :func:`build_model` and :func:`effect_rows` (``ratio.py``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Callable, Literal, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import special

from .anova import type2_anova
from .cells import CellData, prepare_cells
from .coding import FactorSpec, Term, column_names, contrast_vector, hierarchical_terms, model_matrix
from .cuped import COVARIATE_NAME, ancova_type2, cellwise_hc2_components, cuped_summary, fit_ancova
from .design import FractionalDesign, fractional_design
from .multiplicity import benjamini_hochberg
from .validation import validate_cell_stats
from .wls import WLSFit, fit_wls, nonestimable_terms

EFFECT_COLUMNS = [
    "term", "level", "aliases", "estimate", "std_error", "ci_low", "ci_high", "p_value", "q_value",
    "df", "statistic", "control_mean", "rel_lift", "rel_ci_low", "rel_ci_high", "rel_p_value", "n_units",
]
ALIAS_REPORT_ORDER = 3  # aliases longer than this are not listed in the effects table


@dataclass
class FactorialResult:
    """Effects, Type II ANOVA and cell means of one metric; ``params``/``cov`` are the raw fit."""

    effects: pd.DataFrame
    anova: pd.DataFrame
    cell_means: pd.DataFrame
    df_resid: int
    n_total: int
    params: pd.Series
    cov: pd.DataFrame
    se: str
    alpha: float
    sigma2: float
    design: FractionalDesign | None = field(default=None, repr=False)
    cuped: dict | None = None  # covariate=True only: see cuped.cuped_summary


def _letters(spec: FactorSpec, codes: Mapping[str, str] | None) -> list[str]:
    if codes is None:
        if len(spec.names) > 26:
            raise ValueError("more than 26 factors: give codes explicitly")
        return [chr(ord("A") + i) for i in range(len(spec.names))]
    missing = [f for f in spec.names if f not in codes]
    extra = [f for f in codes if f not in spec.names]
    if missing or extra:
        raise ValueError(f"codes must map every factor to a letter: missing {missing}, unknown {extra}")
    letters = [str(codes[f]) for f in spec.names]
    if any(len(l) != 1 or not l.isalpha() for l in letters) or len(set(letters)) != len(letters):
        raise ValueError(f"codes must be distinct single letters, got {dict(codes)}")
    return letters


def _fractional_terms(
    spec: FactorSpec, cells: CellData, generators: Sequence[str], codes, max_order: int | None
) -> tuple[list[Term], dict[Term, str], FractionalDesign]:
    """Alias-class representatives as terms, their alias labels, and the design."""
    letters = _letters(spec, codes)
    for f, lv in zip(spec.names, spec.levels):
        if len(lv) != 2:
            raise ValueError(f"fractional designs need two-level factors; {f!r} has levels {list(lv)}")
    gen_letters = {ch for g in generators for ch in str(g) if ch.isalpha()}
    unknown = sorted(gen_letters - set(letters))
    if unknown:
        raise ValueError(f"generators {list(generators)} use letter(s) {unknown} that are not factor codes {dict(zip(spec.names, letters))}")
    design = fractional_design(letters, generators)
    x = np.where(cells.level_idx == 0, -1, 1)  # first listed level = -1 (low)
    outside = ~design.contains(x)
    if outside.any():
        bad = cells.level_frame()[outside].to_dict("records")
        raise ValueError(
            f"cells {bad[:5]} are not in the fraction {list(design.generators)} "
            "(coding: first listed level = -1, second = +1)"
        )
    pos = {l: i for i, l in enumerate(letters)}

    def to_term(word: str) -> Term:
        return tuple(sorted(pos[ch] for ch in word.lstrip("-")))

    def label(word: str) -> str:
        sign = "-" if word.startswith("-") else ""
        return sign + spec.term_name(to_term(word))

    terms: list[Term] = [()]
    alias_labels: dict[Term, str] = {}
    for cls in design.alias_classes():
        t = to_term(cls.representative)
        if max_order is not None and len(t) > max_order:
            continue
        terms.append(t)
        alias_labels[t] = ", ".join(label(w) for w in cls.aliases if len(w.lstrip("-")) <= ALIAS_REPORT_ORDER)
    return terms, alias_labels, design


def t_sf(x, df: float):
    """Upper tail of Student t (normal for ``df = inf``); ufuncs, no frozen distributions."""
    return special.ndtr(-x) if np.isinf(df) else special.stdtr(df, -x)


def t_ppf(p, df: float):
    return special.ndtri(p) if np.isinf(df) else special.stdtrit(df, p)


def effect_rows(
    spec: FactorSpec, cells: CellData, beta: np.ndarray, cov: np.ndarray, slices, alias_labels,
    reference: Callable[[np.ndarray], float], alpha: float, flags: tuple[np.ndarray, str] | None = None,
) -> list[dict]:
    """One row per non-control level combination of every term: ``L'beta`` with ``L'VL``.

    ``reference(L)`` is the df of the contrast's t reference (``inf`` = normal); p-value, CI and
    the relative lift all use it. Only the columns in ``slices`` enter a contrast; any extra
    trailing coefficient (the CUPED covariate) gets weight 0, so the contrasts are of cell means
    adjusted at the same ``x``. ``flags = (flagged cells, status)``: a row whose contrast uses a
    flagged cell gets that ``status`` (else ``"ok"``).
    """
    p = len(beta)
    rows = []
    for term in slices:
        if not term:
            continue
        non_control = [
            [i for i, l in enumerate(spec.levels[f]) if l != spec.controls[f]] for f in term
        ]
        for combo in itertools.product(*non_control):
            L = np.zeros(p)
            L[slices[term]] = contrast_vector(spec, term, combo)
            est = float(L @ beta)
            se = float(np.sqrt(max(L @ cov @ L, 0.0)))
            df = float(reference(L))
            crit = float(t_ppf(1 - alpha / 2, df))
            stat = est / se if se > 0 else np.nan
            pval = float(2 * t_sf(abs(stat), df)) if np.isfinite(stat) else np.nan
            in_cells = np.ones(len(cells.n), dtype=bool)
            for f, l in zip(term, combo):
                c = spec.level_index(f, spec.controls[f])
                in_cells &= np.isin(cells.level_idx[:, f], [l, c])
            row = {
                "term": spec.term_name(term),
                "level": ":".join(spec.levels[f][l] for f, l in zip(term, combo)),
                "aliases": alias_labels.get(term, ""),
                "estimate": est, "std_error": se,
                "ci_low": est - crit * se, "ci_high": est + crit * se,
                "p_value": pval, "q_value": np.nan, "df": df, "statistic": stat,
                "control_mean": np.nan, "rel_lift": np.nan, "rel_ci_low": np.nan,
                "rel_ci_high": np.nan, "rel_p_value": np.nan,
                "n_units": int(cells.n[in_cells].sum()),
            }
            if flags is not None:
                row["status"] = flags[1] if flags[0][in_cells].any() else "ok"
            if len(term) == 1:
                row.update(_relative(spec, term[0], L, beta, cov, slices, df, crit))
            rows.append(row)
    return rows


def _relative(spec, f, L, beta, cov, slices, df, crit) -> dict:
    """Control marginal mean and delta-method relative lift for a main effect."""
    M = np.zeros(len(beta))
    M[slices[()]] = 1.0
    M[slices[(f,)]] = spec.coding(f)[spec.level_index(f, spec.controls[f])]
    a, b = float(L @ beta), float(M @ beta)
    out = {"control_mean": b}
    if b == 0:
        return out
    g = L / b - (a / b**2) * M  # gradient of a/b with respect to beta
    se = float(np.sqrt(max(g @ cov @ g, 0.0)))
    rel = a / b
    stat = rel / se if se > 0 else np.nan
    out.update(
        rel_lift=rel, rel_ci_low=rel - crit * se, rel_ci_high=rel + crit * se,
        rel_p_value=float(2 * t_sf(abs(stat), df)) if np.isfinite(stat) else np.nan,
    )
    return out


@dataclass(frozen=True)
class CellModel:
    """The model over the observed cells: terms, matrix, column slices, alias labels, design."""

    terms: list[Term]
    X: np.ndarray
    slices: dict[Term, slice]
    alias_labels: dict[Term, str]
    design: FractionalDesign | None


def build_model(
    spec: FactorSpec, cells: CellData, generators: Sequence[str], codes, max_order: int | None,
    blocks: Sequence[str] = (),
) -> CellModel:
    """Full (hierarchical) or fractional (alias-class) model; refuses non-estimable terms.

    ``blocks``: factors that enter with a main effect only (e.g. day or platform strata), as in
    ``y ~ C(block) + C(A)*C(B)``: they absorb block-to-block variation, never interact."""
    if max_order is not None and int(max_order) < 1:
        raise ValueError(f"max_order must be >= 1, got {max_order}")
    design = None
    alias_labels: dict[Term, str] = {}
    block_idx = [spec.names.index(b) for b in blocks]
    if generators:
        if blocks:
            raise ValueError("blocks are not supported together with a fractional design")
        terms, alias_labels, design = _fractional_terms(spec, cells, generators, codes, max_order)
    else:
        treat = [i for i in range(len(spec.names)) if i not in block_idx]
        terms = [tuple(treat[i] for i in t) for t in hierarchical_terms(len(treat), max_order)]
        terms += [(b,) for b in block_idx]
    X, slices = model_matrix(spec, terms, cells.level_idx)
    bad = nonestimable_terms(X, slices, cells)
    if bad:
        raise ValueError(
            f"not enough cells to estimate the model ({len(cells.n)} observed cells, {X.shape[1]} "
            f"coefficients): term(s) {[spec.term_name(t) for t in bad]} are not estimable; "
            "collect the missing cells or lower max_order"
        )
    return CellModel(terms, X, slices, alias_labels, design)


def covariance(fit: WLSFit, cells: CellData, se: str, covariate: bool) -> tuple[np.ndarray, Callable[[np.ndarray], float]]:
    """``Cov(beta)`` and the df of a contrast's reference: pooled ``t(N - p)``; robust (HC2, or the
    cell-wise HC2 with a covariate) Welch-Satterthwaite df, ``inf`` (normal) when large."""
    if se == "pooled":
        return fit.cov_pooled(), lambda L: float(fit.df_resid)
    parts = cellwise_hc2_components(fit, cells) if covariate else fit.hc2_components(cells)
    return parts.cov(), parts.df


def check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def analyze_cells(
    cell_stats,
    factors: Mapping[str, Sequence[str]],
    *,
    control: Mapping[str, str] | None = None,
    generators: Sequence[str] = (),
    codes: Mapping[str, str] | None = None,
    alpha: float = 0.05,
    se: Literal["robust", "pooled"] = "robust",
    max_order: int | None = None,
    covariate: bool = False,
    blocks: Sequence[str] = (),
) -> FactorialResult:
    """Effects, Type II ANOVA and cell means from per-cell ``n``, ``sum``, ``sum_sq``.

    ``blocks``: names of entries of ``factors`` that are blocking variables (main effect only,
    no interactions, not reported as effects; they stay in the ANOVA table).

    ``cell_stats``: pandas or polars frame, one string column per factor plus ``n``, ``sum``,
    ``sum_sq``. ``factors``: levels in the order that defines the coding (last level = -1
    row) and the default control (first level). ``generators`` (e.g. ``["D=ABC"]`` with
    ``codes`` mapping factor -> letter, default A, B, C... in factor order) switch to a
    two-level fractional analysis. See the module docstring for the method.

    ``covariate=True`` (CUPED / ANCOVA, see ``cuped.py``) also needs ``cov_sum``,
    ``cov_sum_sq``, ``cross_sum`` (sums of the pre-period x, x^2, x*y); the effects are then
    contrasts of cell means adjusted to the grand mean of x, ``se="robust"`` is the cell-wise
    HC2 documented there, the ANOVA is Type II ANCOVA (with a ``covariate`` row), and
    ``result.cuped`` holds theta, the variance reduction and the pre-period imbalance test.
    """
    if se not in ("robust", "pooled"):
        raise ValueError(f"se must be 'robust' or 'pooled', got {se!r}")
    check_alpha(alpha)
    if isinstance(generators, str):
        generators = [generators]
    spec = FactorSpec.from_mapping(factors, control)
    validate_cell_stats(cell_stats, "mean", cell=list(spec.names), covariate=covariate, min_n=1)
    cells = prepare_cells(cell_stats, spec, covariate=covariate)
    unknown = [b for b in blocks if b not in spec.names]
    if unknown:
        raise ValueError(f"block(s) {unknown} must also be listed in factors")
    model = build_model(spec, cells, generators, codes, max_order, blocks)
    X, slices, terms = model.X, model.slices, model.terms
    n_coef = X.shape[1] + (1 if covariate else 0)
    if cells.n_total - n_coef <= 0:
        raise ValueError(
            f"no residual degrees of freedom: {cells.n_total} units for {n_coef} coefficients"
        )
    fit = fit_ancova(X, cells) if covariate else fit_wls(X, cells)
    cov, reference = covariance(fit, cells, se, covariate)
    anova = (ancova_type2 if covariate else type2_anova)(fit, slices, cells, spec.term_name)

    beta = fit.beta.copy()  # fitted on means relative to cells.offset: add it to the intercept
    beta[slices[()]] += cells.offset
    block_idx = {spec.names.index(b) for b in blocks}
    effect_slices = {t: sl for t, sl in slices.items() if not block_idx.intersection(t)}
    rows = effect_rows(spec, cells, beta, cov, effect_slices, model.alias_labels, reference, alpha)
    effects = finish_effects(rows)

    names = [c for t in terms for c in column_names(spec, t)] + ([COVARIATE_NAME] if covariate else [])
    cell_means = cells.level_frame()
    cell_means["n"] = cells.n.astype(int)
    cell_means["mean"] = cells.offset + cells.mean
    with np.errstate(invalid="ignore", divide="ignore"):
        cell_means["sd"] = np.where(cells.n > 1, np.sqrt(cells.ss_within / np.maximum(cells.n - 1, 1)), np.nan)
    cell_means["fitted"] = cells.offset + fit.fitted
    cuped = None
    if covariate:
        cuped = cuped_summary(fit, cells)
        cell_means["cov_mean"] = cells.cov_offset + cells.cov_mean
        cell_means["adjusted_mean"] = cells.offset + (cells.mean - cuped["theta"] * (cells.cov_mean - cuped["covariate_mean"]))
        cuped["covariate_mean"] += cells.cov_offset

    return FactorialResult(
        effects=effects,
        anova=anova,
        cell_means=cell_means,
        df_resid=int(fit.df_resid),
        n_total=cells.n_total,
        params=pd.Series(beta, index=names),
        cov=pd.DataFrame(cov, index=names, columns=names),
        se=se,
        alpha=alpha,
        sigma2=fit.sigma2,
        design=model.design,
        cuped=cuped,
    )


def finish_effects(rows: list[dict]) -> pd.DataFrame:
    """The effects frame in :data:`EFFECT_COLUMNS` order (plus ``status`` when rows carry one)
    with BH q-values over its rows."""
    effects = pd.DataFrame(rows, columns=EFFECT_COLUMNS + (["status"] if rows and "status" in rows[0] else []))
    if len(effects):
        effects["q_value"] = benjamini_hochberg(effects["p_value"].to_numpy())
    return effects
