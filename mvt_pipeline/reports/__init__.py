"""Self-contained HTML decision reports (inline CSS and SVG only) for experiments and their index."""

from .experiment_report import CELL_COLUMNS, EFFECT_COLUMNS, OPTIONAL_EFFECT_COLUMNS, render_experiment_report
from .index_page import render_index

__all__ = ["CELL_COLUMNS", "EFFECT_COLUMNS", "OPTIONAL_EFFECT_COLUMNS", "render_experiment_report", "render_index"]
