"""Statistics engine: pure functions over per-cell sufficient statistics (no I/O).

Public API: :func:`analyze_cells` / :func:`analyze_units` (factorial effects, Type II ANOVA;
``covariate=`` for CUPED/ANCOVA), :func:`analyze_ratio_cells` (ratio metrics, delta method),
:func:`full_design` / :func:`fractional_design` (designs, aliases, resolution),
:func:`benjamini_hochberg` / :func:`holm` (multiplicity), :func:`srm_test` / :func:`srm_margins`
(sample-ratio mismatch on the cell table and on each factor's margins).
"""

from .cells import COVARIATE_COLUMNS
from .design import AliasClass, FractionalDesign, fractional_design, full_design
from .factorial import EFFECT_COLUMNS, FactorialResult, analyze_cells
from .multiplicity import benjamini_hochberg, holm
from .ratio import RATIO_COLUMNS, analyze_ratio_cells
from .srm import SRMResult, srm_margins, srm_test
from .units import analyze_units, unit_cell_stats

__all__ = [
    "AliasClass",
    "COVARIATE_COLUMNS",
    "EFFECT_COLUMNS",
    "FactorialResult",
    "FractionalDesign",
    "RATIO_COLUMNS",
    "SRMResult",
    "analyze_cells",
    "analyze_ratio_cells",
    "analyze_units",
    "benjamini_hochberg",
    "fractional_design",
    "full_design",
    "holm",
    "srm_margins",
    "srm_test",
    "unit_cell_stats",
]
