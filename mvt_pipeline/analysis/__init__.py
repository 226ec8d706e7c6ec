"""Glue between warehouse tables and the stats engine: which cells, which metrics, which family.

Pure pandas: no Dagster and no DuckDB here, so it is unit-testable and usable from a notebook.
"""
