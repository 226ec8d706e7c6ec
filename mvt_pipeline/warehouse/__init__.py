"""The warehouse side of the analysis: the `analysis.*` DDL and the reads and writes the assets do."""

from .analysis_schema import TABLES, AnalysisTable, ensure_analysis_schema, ensure_table
from .store import StaleMartsError, replace_nights, require_marts_for

__all__ = ["TABLES", "AnalysisTable", "StaleMartsError", "ensure_analysis_schema", "ensure_table",
           "replace_nights", "require_marts_for"]
