"""Statistics engine: pure functions over per-cell sufficient statistics (no I/O).

Public API: :func:`analyze_cells` / :func:`analyze_units` (factorial effects, Type II ANOVA;
``covariate=`` for CUPED/ANCOVA), :func:`analyze_ratio_cells` (ratio metrics, delta method),
:func:`analyze_quantile_cells` (quantile metrics) with :func:`quantile_cell_stats` (its inputs
from per-event rows, as ``unit_cell_stats`` for means), :func:`validate_cell_stats` /
:class:`InvalidSufficientStatistics` (the one check of per-cell sufficient statistics),
:func:`full_design` / :func:`fractional_design` (designs, aliases, resolution),
:func:`benjamini_hochberg` / :func:`holm` (multiplicity), :func:`srm_test` / :func:`srm_margins`
(sample-ratio mismatch on the cell table, on each factor's margins and, with
:func:`srm_segments`, per segment with Bonferroni),
:func:`sequential_ci` / :func:`sequential_p_value` (always-valid confidence sequences),
:func:`prob_best` (Bayesian probability of being best and expected loss),
:func:`power_factorial` / :func:`mde_factorial` / :func:`required_units` / :func:`required_days`
(planning), :func:`segment_effects` (HTE: per-segment effects, Cochran's Q, shrinkage),
:func:`shrink_interactions` / :func:`add_shrinkage` (empirical-Bayes interactions) and
:func:`lenth` (Lenth's PSE for unreplicated designs). Sums may be shifted (``shifts.py``).
See ``docs/statistics.md`` for the methods.
"""

from .bayes import BAYES_COLUMNS, prob_best
from .cells import COVARIATE_COLUMNS
from .design import AliasClass, FractionalDesign, fractional_design, full_design
from .factorial import EFFECT_COLUMNS, FactorialResult, analyze_cells
from .hte import HETEROGENEITY_COLUMNS, SEGMENT_COLUMNS, HTEResult, cochran_q, eb_shrink, segment_effects
from .interactions import Lenth, add_shrinkage, lenth, shrink_interactions
from .multiplicity import benjamini_hochberg, holm
from .power import contrast_std_errors, mde_factorial, power_factorial, required_days, required_units
from .ratio import RATIO_COLUMNS, analyze_ratio_cells
from .quantile import QUANTILE_COLUMNS, analyze_quantile_cells
from .sequential import (
    SEQUENTIAL_COLUMNS, add_sequential, cs_multiplier, one_sided_bound, one_sided_p_value, sequential_ci,
    sequential_p_value,
)
from .srm import SRMResult, srm_margins, srm_segments, srm_test
from .units import analyze_units, quantile_cell_stats, unit_cell_stats
from .validation import InvalidSufficientStatistics, validate_cell_stats

__all__ = [
    "AliasClass",
    "BAYES_COLUMNS",
    "COVARIATE_COLUMNS",
    "EFFECT_COLUMNS",
    "FactorialResult",
    "FractionalDesign",
    "HETEROGENEITY_COLUMNS",
    "HTEResult",
    "InvalidSufficientStatistics",
    "Lenth",
    "RATIO_COLUMNS",
    "SEGMENT_COLUMNS",
    "SEQUENTIAL_COLUMNS",
    "SRMResult",
    "QUANTILE_COLUMNS",
    "add_sequential",
    "add_shrinkage",
    "analyze_quantile_cells",
    "analyze_cells",
    "analyze_ratio_cells",
    "analyze_units",
    "benjamini_hochberg",
    "cochran_q",
    "contrast_std_errors",
    "cs_multiplier",
    "eb_shrink",
    "fractional_design",
    "full_design",
    "holm",
    "lenth",
    "mde_factorial",
    "power_factorial",
    "prob_best",
    "quantile_cell_stats",
    "required_days",
    "required_units",
    "segment_effects",
    "shrink_interactions",
    "one_sided_bound",
    "one_sided_p_value",
    "sequential_ci",
    "sequential_p_value",
    "srm_margins",
    "srm_segments",
    "srm_test",
    "unit_cell_stats",
    "validate_cell_stats",
]
