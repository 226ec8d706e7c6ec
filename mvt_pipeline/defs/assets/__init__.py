"""Dagster assets: thin wrappers that read the warehouse, call pure code and write results."""
