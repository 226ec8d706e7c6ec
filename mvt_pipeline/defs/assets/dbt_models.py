import os
from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtCliResource, dbt_assets
from dagster_duckdb import DuckDBResource

from ..resources import WAREHOUSE_POOL, dbt_project


class MvtDbtTranslator(DagsterDbtTranslator):
    """dbt sources map onto the Dagster assets that write them; models keep their own names."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        name = dbt_resource_props["name"]
        if dbt_resource_props["resource_type"] == "source":
            return dg.AssetKey("raw_events" if name == "events" else "experiment_registry")
        return dg.AssetKey(name)

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return "marts"


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    dagster_dbt_translator=MvtDbtTranslator(
        settings=DagsterDbtTranslatorSettings(enable_duplicate_source_asset_keys=True)
    ),
    pool=WAREHOUSE_POOL,
)
def mvt_dbt_models(context: dg.AssetExecutionContext, dbt: DbtCliResource, duckdb: DuckDBResource):
    """Staging and marts in dbt: dedup, first exposure, attribution, unit metrics, cell stats."""
    # dbt runs in a subprocess that reads the warehouse path from the environment.
    os.environ["MVT_DUCKDB_PATH"] = str(duckdb.database)
    yield from dbt.cli(["build"], context=context).stream()
