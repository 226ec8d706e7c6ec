import dataclasses

import dagster as dg
from dagster_duckdb import DuckDBResource

from ...config import settings
from ...ingest import ingest_partition
from ...ingest.warehouse_schema import raw_events_columns
from ...quality.gx_runner import run_suite
from ...quality.metric_suites import blocks_the_night, save_validation, validate_metric
from ...quality.telemetry_metrics import Thresholds, all_metrics, check_descriptions
from ...quality.telemetry_suite import SUITE_NAME, build_telemetry_suite, sample_sql
from ...registry import load_registry
from ...warehouse import lake, store
from ..catalog import PLATFORM_TEAM, column_schema
from ..partitions import daily_partitions, one_night_per_run
from ..resources import WAREHOUSE_POOL

# metric name -> check description; blocking ones stop the night's analysis at ERROR.
METRIC_CHECKS = check_descriptions(Thresholds())


CHECKS = [
    dg.AssetCheckSpec("row_accounting", asset="raw_events", blocking=True,
                      description="Every file: lines read = rows accepted + rows quarantined."),
    dg.AssetCheckSpec("gx_telemetry_schema", asset="raw_events", blocking=True,
                      description="Great Expectations suite: required fields, enums, ranges, registry ids."),
] + [dg.AssetCheckSpec(name, asset="raw_events", blocking=blocks_the_night(name), description=text)
     for name, text in METRIC_CHECKS.items()]


_DEFAULTS = Thresholds()


class IngestConfig(dg.Config):
    """Run-time knobs (Launchpad): re-ingest unchanged files, and the data-quality thresholds
    (defaults from `Thresholds`, the one place they are defined)."""

    force: bool = False
    loss_error: float = _DEFAULTS.loss_error
    lag_p95_warn_s: float = _DEFAULTS.lag_p95_warn_s
    lag_p95_error_s: float = _DEFAULTS.lag_p95_error_s
    duplicate_warn: float = _DEFAULTS.duplicate_warn
    bot_share_warn: float = _DEFAULTS.bot_share_warn
    quarantine_warn: float = _DEFAULTS.quarantine_warn
    quarantine_error: float = _DEFAULTS.quarantine_error
    volume_change_warn: float = _DEFAULTS.volume_change_warn

    def thresholds(self) -> Thresholds:
        return dataclasses.replace(_DEFAULTS, **{k: v for k, v in self.model_dump().items() if k != "force"})


@one_night_per_run
@dg.asset(
    group_name="ingestion",
    partitions_def=daily_partitions,
    deps=["experiment_registry"],
    check_specs=CHECKS,
    pool=WAREHOUSE_POOL,
    kinds={"duckdb"},
    owners=[PLATFORM_TEAM],
    metadata={"dagster/table_name": "raw.events", "dagster/column_schema": column_schema(raw_events_columns())},
)
def raw_events(context: dg.AssetExecutionContext, config: IngestConfig, duckdb: DuckDBResource):
    """One day of raw dumps (`raw/<source>/dt=<day>/`) into `raw.events`; unusable lines go to
    `raw.quarantine` with a reason. Re-materializing a day replaces it; unchanged files are a no-op."""
    partition = context.partition_key
    s = settings()
    registry = load_registry(s.registry_dir)
    thresholds = config.thresholds()
    with duckdb.get_connection() as conn:
        summary = ingest_partition(conn, s.raw_dir, partition, registry, force=config.force,
                                   progress=context.log.info)
        metrics = all_metrics(conn, partition, thresholds)
        outcomes = {}
        for name, metric in metrics.items():
            outcome = validate_metric(metric, thresholds)
            if outcome is not None:
                save_validation(conn, partition, f"telemetry_{name}", outcome)
            outcomes[name] = outcome
        sample = store.telemetry_sample(conn, sample_sql(), partition)
        schema = run_suite(sample, build_telemetry_suite(registry)) if len(sample) else None
        if schema is not None:
            save_validation(conn, partition, SUITE_NAME, schema)
        if s.on_spark:  # the day's rows as Parquet by dt, what the dbt models read on Spark
            lake.write_day(conn, s.spark.lake_dir, partition)
            context.log.info(f"{partition}: raw.events and raw.quarantine written to {s.spark.lake_dir}")
    for warning in summary.warnings:
        context.log.warning(warning)
    if summary.skipped_unchanged:
        context.log.info(f"{partition}: every file unchanged since the last ingestion: nothing re-read")
    else:
        context.log.info(
            f"{partition}: {len(summary.files)} files, {summary.rows_read} lines, {summary.rows_accepted} accepted, "
            f"{summary.rows_quarantined} quarantined, {summary.pii_redactions} PII values redacted")
    yield dg.MaterializeResult(metadata={
        "dagster/row_count": summary.rows_accepted,
        "files": len(summary.files),
        "skipped_unchanged": summary.skipped_unchanged,
        "rows_read": summary.rows_read,
        "rows_accepted": summary.rows_accepted,
        "rows_quarantined": summary.rows_quarantined,
        "quarantine_reasons": dg.MetadataValue.json(summary.reasons),
        "pii_redacted_by_kind": dg.MetadataValue.json(summary.pii_by_kind),
        "loss_rate": metrics["loss_rate"].value,
        "lag_p95_s": metrics["lag_p95"].value,
    })

    yield dg.AssetCheckResult(
        check_name="row_accounting", passed=not summary.mismatched_files, severity=dg.AssetCheckSeverity.ERROR,
        metadata={"files": len(summary.files), "rows_read": summary.rows_read,
                  "rows_accepted": summary.rows_accepted, "rows_quarantined": summary.rows_quarantined,
                  "mismatched_files": dg.MetadataValue.json(summary.mismatched_files)},
    )
    yield dg.AssetCheckResult(
        check_name="gx_telemetry_schema", passed=schema is None or schema.success,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"suite": SUITE_NAME, "rows_validated": len(sample),
                  "expectations": schema.evaluated if schema else 0,
                  "failed": dg.MetadataValue.json(schema.failed if schema else [])},
    )
    for name, metric in metrics.items():
        outcome = outcomes.get(name)
        yield dg.AssetCheckResult(
            check_name=name,
            passed=metric.status == "OK",
            severity=dg.AssetCheckSeverity.ERROR if metric.status == "ERROR" else dg.AssetCheckSeverity.WARN,
            metadata={
                "value": metric.value,
                "status": metric.status,
                "per_source": dg.MetadataValue.json(metric.per_source),
                "details": dg.MetadataValue.json(metric.details),
                "gx_failed": dg.MetadataValue.json(outcome.failed if outcome else []),
            },
        )
