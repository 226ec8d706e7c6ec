import dagster as dg
from dagster_duckdb import DuckDBResource

from ...config import settings
from ...ingest import ingest_partition
from ...quality.gx_runner import run_suite
from ...quality.telemetry_suite import SUITE_NAME, build_telemetry_suite
from ...registry import load_registry
from ..partitions import daily_partitions
from ..resources import WAREHOUSE_POOL

GX_SAMPLE_ROWS = 200_000
QUARANTINE_WARN_RATE = 0.01

CHECKS = [
    dg.AssetCheckSpec("row_accounting", asset="raw_events", blocking=True,
                      description="Every file: lines read = rows accepted + rows quarantined."),
    dg.AssetCheckSpec("gx_telemetry_schema", asset="raw_events", blocking=True,
                      description="Great Expectations suite: required fields, enums, ranges, registry ids."),
    dg.AssetCheckSpec("quarantine_rate", asset="raw_events",
                      description=f"WARN when more than {QUARANTINE_WARN_RATE:.0%} of lines are quarantined."),
]


def _gx_sample(conn, partition: str):
    return conn.execute(
        f"""
        select event_id, event_type, ts, unit_id, experiment_id, seq, pii_redactions,
               date_diff('millisecond', ts, received_at) / 1000.0 as lag_seconds
        from raw.events where dt = ?::date
        using sample reservoir({GX_SAMPLE_ROWS} rows) repeatable (7)
        """,
        [partition],
    ).df()


@dg.asset(
    group_name="ingestion",
    partitions_def=daily_partitions,
    deps=["experiment_registry"],
    check_specs=CHECKS,
    pool=WAREHOUSE_POOL,
    kinds={"duckdb"},
)
def raw_events(context: dg.AssetExecutionContext, duckdb: DuckDBResource):
    """One day of raw dumps (`raw/<source>/dt=<day>/`) into `raw.events`; unusable lines go to
    `raw.quarantine` with a reason. Re-materializing a day replaces it."""
    partition = context.partition_key
    s = settings()
    registry = load_registry(s.registry_dir)
    with duckdb.get_connection() as conn:
        summary = ingest_partition(conn, s.raw_dir, partition, registry)
        reasons = conn.execute(
            "select reason, count(*) n from raw.quarantine where dt = ?::date group by 1 order by 2 desc",
            [partition],
        ).fetchall()
        sample = _gx_sample(conn, partition) if summary.rows_accepted else None
        if sample is not None:
            outcome = run_suite(sample, build_telemetry_suite(registry))
            conn.execute("create schema if not exists analysis")
            conn.execute(
                "create table if not exists analysis.gx_validations (dt date, suite varchar, success boolean,"
                " evaluated integer, failed integer, result json, validated_at timestamp)"
            )
            conn.execute("delete from analysis.gx_validations where dt = ?::date and suite = ?", [partition, SUITE_NAME])
            conn.execute(
                "insert into analysis.gx_validations values (?::date, ?, ?, ?, ?, ?, now()::timestamp)",
                [partition, SUITE_NAME, outcome.success, outcome.evaluated, len(outcome.failed), outcome.result_json],
            )
    for bad in summary.unreadable_files:
        context.log.warning(f"unreadable file quarantined whole: {bad.path}: {bad.error}")
    context.log.info(
        f"{partition}: {len(summary.files)} files, {summary.rows_read} lines, {summary.rows_accepted} accepted, "
        f"{summary.rows_quarantined} quarantined, {summary.pii_redactions} PII values redacted"
    )
    quarantine_rate = summary.rows_quarantined / summary.rows_read if summary.rows_read else 0.0
    yield dg.MaterializeResult(metadata={
        "files": len(summary.files),
        "rows_read": summary.rows_read,
        "rows_accepted": summary.rows_accepted,
        "rows_quarantined": summary.rows_quarantined,
        "quarantine_rate": quarantine_rate,
        "pii_redactions": summary.pii_redactions,
        "quarantine_reasons": dg.MetadataValue.json({r: n for r, n in reasons}),
    })

    mismatched = [f.path for f in summary.files if f.rows_read != f.rows_accepted + f.rows_quarantined]
    yield dg.AssetCheckResult(
        check_name="row_accounting", passed=not mismatched,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"files": len(summary.files), "rows_read": summary.rows_read,
                  "rows_accepted": summary.rows_accepted, "rows_quarantined": summary.rows_quarantined,
                  "mismatched_files": dg.MetadataValue.json(mismatched)},
    )
    if sample is None:
        yield dg.AssetCheckResult(check_name="gx_telemetry_schema", passed=True,
                                  metadata={"note": "no accepted rows in this partition"})
    else:
        yield dg.AssetCheckResult(
            check_name="gx_telemetry_schema", passed=outcome.success,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"suite": SUITE_NAME, "rows_validated": len(sample),
                      "expectations": outcome.evaluated, "failed": dg.MetadataValue.json(outcome.failed)},
        )
    yield dg.AssetCheckResult(
        check_name="quarantine_rate", passed=quarantine_rate <= QUARANTINE_WARN_RATE,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"quarantine_rate": quarantine_rate,
                  "reasons": dg.MetadataValue.json({r: n for r, n in reasons})},
    )
