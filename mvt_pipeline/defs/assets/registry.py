import dagster as dg
from dagster_duckdb import DuckDBResource

from ...config import settings
from ...registry import load_registry
from ...registry.warehouse_tables import write_registry_tables
from ..resources import WAREHOUSE_POOL


@dg.asset(group_name="ingestion", pool=WAREHOUSE_POOL, kinds={"duckdb", "yaml"})
def experiment_registry(context: dg.AssetExecutionContext, duckdb: DuckDBResource) -> dg.MaterializeResult:
    """The YAML registry (experiments, factors, metrics, segments) as `raw.registry_*` tables."""
    registry = load_registry(settings().registry_dir)
    with duckdb.get_connection() as conn:
        counts = write_registry_tables(conn, registry)
    context.log.info(f"registry: {len(registry.experiments)} experiments, {len(registry.metrics)} metrics")
    return dg.MaterializeResult(metadata={
        "experiments": len(registry.experiments),
        "metrics": len(registry.metrics),
        **{f"rows_{k}": v for k, v in counts.items()},
    })
