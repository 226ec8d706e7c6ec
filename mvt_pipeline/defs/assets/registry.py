import dagster as dg
from dagster_duckdb import DuckDBResource

from ...audit import FlagFileError, load_flag_files
from ...config import settings
from ...registry import RegistryError, load_registry
from ...registry.lint import lint_registry_dir
from ...registry.warehouse_tables import write_registry_tables
from ...warehouse import lake
from ..catalog import PLATFORM_TEAM
from ..partitions import daily_partitions, night_of, one_night_per_run
from ..resources import WAREHOUSE_POOL


@one_night_per_run
@dg.asset(
    group_name="ingestion",
    partitions_def=daily_partitions,
    pool=WAREHOUSE_POOL,
    kinds={"duckdb", "yaml"},
    owners=[PLATFORM_TEAM],
    check_specs=[dg.AssetCheckSpec(
        "registry_lint", asset="experiment_registry", blocking=True,
        description="Registry governance: duplicate ids, unknown metrics, missing control/owner/hypothesis, "
                    "levels not in flag variants (ERROR); overlaps without orthogonality, past end date (WARN).")],
)
def experiment_registry(context: dg.AssetExecutionContext, duckdb: DuckDBResource):
    """The YAML registry (experiments, factors, metrics, segments) as `raw.registry_*` tables, as it is
    when the night runs, linted against the flag files as of the night."""
    s = settings()
    try:
        flags = load_flag_files(s.flags_dir) if s.flags_dir.exists() else []
    except FlagFileError as exc:
        context.log.warning(f"flag files unreadable, flag rules of the lint skipped: {exc}")
        flags = None
    lint = lint_registry_dir(s.registry_dir, flags, night_of(context))
    try:
        registry = load_registry(s.registry_dir)
    except RegistryError as exc:
        raise dg.Failure(description=str(exc), metadata={"lint": dg.MetadataValue.md(lint.to_markdown(index=False))}) from exc
    with duckdb.get_connection() as conn:
        counts = write_registry_tables(conn, registry)
        if s.on_spark:
            lake.write_registry(conn, s.spark.lake_dir)
    context.log.info(f"registry: {len(registry.experiments)} experiments, {len(registry.metrics)} metrics")
    yield dg.MaterializeResult(metadata={
        "dagster/table_name": "raw.registry_experiments",
        "dagster/row_count": len(registry.experiments),
        "experiments": len(registry.experiments),
        "metrics": len(registry.metrics),
        **{f"rows_{k}": v for k, v in counts.items()},
    })
    errors = lint[lint["severity"] == "ERROR"]
    yield dg.AssetCheckResult(
        check_name="registry_lint", passed=lint.empty,
        severity=dg.AssetCheckSeverity.ERROR if len(errors) else dg.AssetCheckSeverity.WARN,
        metadata={"errors": len(errors), "warnings": int((lint["severity"] == "WARN").sum()),
                  "findings": dg.MetadataValue.md(lint.to_markdown(index=False) if not lint.empty else "(none)")},
    )
