"""Catalogue metadata shared by the assets: owners, table names, row counts and column schemas."""

from __future__ import annotations

import functools

import dagster as dg

from ..config import settings
from ..registry import RegistryError, load_registry
from ..warehouse.analysis_schema import table

PLATFORM_TEAM = "team:experimentation-platform"


def dagster_owner(owner: str) -> str:
    """A registry owner as Dagster spells owners: an e-mail address, or `team:<name>`."""
    return owner if "@" in owner or owner.startswith("team:") else f"team:{owner}"


@functools.cache  # four assets ask when the code location loads: read the registry once
def experiment_owners() -> tuple[str, ...]:
    """The platform team, then every registry owner: the assets that hold one row set per experiment
    are owned by the experiments' owners too. A registry that does not load leaves the team alone
    (the registry asset's check reports why at run time)."""
    try:
        registry = load_registry(settings().registry_dir)
    except (RegistryError, OSError):
        return (PLATFORM_TEAM,)
    owners = sorted({dagster_owner(e.owner) for e in registry.experiments})
    return (PLATFORM_TEAM, *[o for o in owners if o != PLATFORM_TEAM])


def column_schema(columns) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name, str(col_type)) for name, col_type in columns])


def analysis_table_metadata(name: str, row_count: int) -> dict:
    """Table name, row count (all nights) and column schema of one `analysis.*` table."""
    t = table(name)
    return {"dagster/table_name": f"analysis.{name}", "dagster/row_count": row_count,
            "dagster/column_schema": column_schema(t.columns)}


def analysis_tables_metadata(counts: dict[str, int]) -> dict:
    """The metadata of an asset that writes several analysis tables: the first is the asset's table,
    the others are listed with their own row counts."""
    first, *rest = counts
    meta = analysis_table_metadata(first, counts[first])
    for name in rest:
        meta[f"rows_analysis.{name}"] = counts[name]
    return meta
