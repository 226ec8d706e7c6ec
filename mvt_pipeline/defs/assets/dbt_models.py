from collections.abc import Mapping
from typing import Any

import dagster as dg
import duckdb as duckdb_lib
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtCliResource, dbt_assets
from dagster_duckdb import DuckDBResource

from ...config import export_dbt_environment, night_environment, settings
from ...warehouse import lake
from ..catalog import PLATFORM_TEAM, column_schema
from ..partitions import ONE_NIGHT_PER_RUN, daily_partitions
from ..resources import WAREHOUSE_POOL, dbt_project


class MvtDbtTranslator(DagsterDbtTranslator):
    """dbt sources map onto the Dagster assets that write them; models keep their own names and sit in
    a group per dbt folder (staging, intermediate, marts)."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        name = dbt_resource_props["name"]
        if dbt_resource_props["resource_type"] == "source":
            return dg.AssetKey("raw_events" if name == "events" else "experiment_registry")
        return dg.AssetKey(name)

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        fqn = dbt_resource_props.get("fqn", [])
        return next((g for g in ("staging", "intermediate") if g in fqn), "marts")

    def get_owners(self, dbt_resource_props: Mapping[str, Any]):
        return [PLATFORM_TEAM]


def _table_metadata(relations: dict[dg.AssetKey, str]) -> dict[dg.AssetKey, dict]:
    """Row counts and column types of the tables dbt just built, read after dbt has exited (DuckDB
    allows one process at a time, so dagster-dbt's fetch_row_counts cannot query during the run)."""
    out = {}
    with duckdb_lib.connect(str(settings().duckdb_path), read_only=True, config=settings().duckdb_config()) as conn:
        for key, relation in relations.items():
            schema, name = relation.split(".")
            cols = conn.execute(
                "select column_name, data_type from information_schema.columns where table_catalog = current_database()"
                " and table_schema = ? and table_name = ? order by ordinal_position", [schema, name]).fetchall()
            if not cols:
                continue
            rows = conn.execute(f'select count(*) from "{schema}"."{name}"').fetchone()[0]
            out[key] = {"dagster/row_count": int(rows), "dagster/column_schema": column_schema(cols)}
    return out


def dbt_events(invocation) -> list:
    """Every event of a dbt invocation. dagster-dbt leaves the process running when reading its
    events fails (e.g. a node the loaded manifest does not know): nobody would drain its stdout, so
    it would block, holding the warehouse's write lock, and the next night would wait for it."""
    try:
        return list(invocation.stream())
    except BaseException:
        if invocation.process.poll() is None:
            invocation.process.kill()
            invocation.process.wait()
        raise


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    dagster_dbt_translator=MvtDbtTranslator(
        settings=DagsterDbtTranslatorSettings(enable_duplicate_source_asset_keys=True)
    ),
    partitions_def=daily_partitions,
    # One night per run, like every other asset: dbt's as_of is a single day.
    backfill_policy=ONE_NIGHT_PER_RUN,
    pool=WAREHOUSE_POOL,
)
def mvt_dbt_models(context: dg.AssetExecutionContext, dbt: DbtCliResource, duckdb: DuckDBResource):
    """Staging and marts in dbt for one night: dedup, first exposure, attribution, unit metrics, cell
    stats, built from the raw rows with dt <= the night (dbt var `as_of`)."""
    s = settings()
    export_dbt_environment(s)  # dbt runs in a subprocess that reads the warehouse from the environment
    if s.on_spark:  # what ingestion wrote is in the lake, whatever ran before (docs/scale-out.md)
        with duckdb.get_connection() as conn:
            synced = lake.sync_lake(conn, s.spark.lake_dir)
        context.log.info(f"lake {s.spark.lake_dir}: {len(synced.days_written)} day(s) written, "
                         f"{len(synced.days_removed)} removed")
    context.log.info(f"dbt build of the night {context.partition_key} (dbt as_of) on {s.warehouse}")
    # The night goes to dbt in its environment, not --vars (dbt/macros/as_of.sql: partial parsing).
    # dagster-dbt starts dbt with this process's environment inside `cli`: set it for that call only.
    with night_environment(context.partition_key):
        # dagster-dbt uses the op context either way; passing it spares the deprecated `context.op` it
        # would call on an AssetExecutionContext.
        invocation = dbt.cli(["build"], context=context.op_execution_context, target_path=s.dbt_target_dir)
    results = dbt_events(invocation)  # raises when dbt failed: nothing is mirrored then
    if s.on_spark:  # the marts the analysis reads, from Spark's warehouse into the DuckDB file
        with duckdb.get_connection() as conn:
            mirrored = lake.mirror_marts(conn, s.spark.warehouse_dir, context.partition_key)
        context.log.info(f"mirrored from Spark: {mirrored}")
    relations = {}
    for key in context.selected_asset_keys:
        relation = context.assets_def.specs_by_key[key].metadata.get("dagster/table_name")
        if relation:
            relations[key] = ".".join(str(relation).split(".")[-2:])
    extra = _table_metadata(relations)
    for result in results:
        if isinstance(result, dg.Output):
            key = context.assets_def.keys_by_output_name[result.output_name]
            if key in extra:
                result = result.with_metadata({**result.metadata, **extra[key]})
        yield result
