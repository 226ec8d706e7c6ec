import dagster as dg
import pandas as pd
from dagster_duckdb import DuckDBResource

from ...audit import AUDIT_COLUMNS, NEEDS_ACTION, FlagFileError, audit_flags, load_flag_files
from ...config import settings
from ...registry import load_registry
from ...warehouse import store
from ..catalog import analysis_tables_metadata, experiment_owners
from ..night_scope import stage_key
from ..partitions import daily_partitions, night_of, one_night_per_run
from ..resources import WAREHOUSE_POOL


@one_night_per_run
@dg.asset(
    group_name="reporting",
    partitions_def=daily_partitions,
    deps=["agg_experiment_exposures"],
    check_specs=[dg.AssetCheckSpec("no_stale_flags", asset="stale_flag_audit",
                                   description="WARN while any flag needs clean-up.")],
    pool=WAREHOUSE_POOL,
    kinds={"python"},
    owners=experiment_owners(),
)
def stale_flag_audit(context: dg.AssetExecutionContext, duckdb: DuckDBResource):
    """Classify every feature flag (flagd files) against the registry and exposure activity into
    `analysis.stale_flags`, with owner, age and the recommended action."""
    s = settings()
    registry = load_registry(s.registry_dir)
    flags, flag_error = _flags_or_error(context)
    as_of = night_of(context)
    with duckdb.get_connection() as conn:
        store.require_marts_for(conn, as_of)
        audit = (audit_flags(flags, registry, store.last_exposures(conn), as_of) if flag_error is None
                 else pd.DataFrame(columns=AUDIT_COLUMNS))
        key = stage_key(context)
        store.replace_nights(conn, {"stale_flags": audit}, as_of, stage_key=key)
        counts = {"stale_flags": store.table_row_count(conn, "stale_flags", as_of, key)}
    by_class = audit["classification"].value_counts().to_dict() if not audit.empty else {}
    yield dg.MaterializeResult(metadata={
        **analysis_tables_metadata(counts),
        "flags": len(flags),
        **({"flag_file_error": flag_error} if flag_error is not None else {}),
        "by_class": dg.MetadataValue.json({k: int(v) for k, v in by_class.items()}),
    })
    if flag_error is not None:
        yield dg.AssetCheckResult(check_name="no_stale_flags", passed=False, severity=dg.AssetCheckSeverity.ERROR,
                                  description=f"flag files unreadable, no audit tonight: {flag_error}",
                                  metadata={"error": flag_error})
        return
    action = audit[audit["classification"].isin(NEEDS_ACTION)] if not audit.empty else audit
    yield dg.AssetCheckResult(
        check_name="no_stale_flags", passed=action.empty, severity=dg.AssetCheckSeverity.WARN,
        metadata={"needs_action": dg.MetadataValue.md(
            action[["flag_key", "classification", "owner", "recommended_action"]].to_markdown(index=False)
            if not action.empty else "(none)")},
    )


def _flags_or_error(context: dg.AssetExecutionContext) -> tuple[list, str | None]:
    """The night's flags, or none and the reason: a bad flag file fails this audit's check (ERROR,
    naming file, path and reason), not the asset, so the reports and the night still publish."""
    s = settings()
    try:
        return (load_flag_files(s.flags_dir) if s.flags_dir.exists() or s.flags_dir.is_symlink() else []), None
    except FlagFileError as exc:
        context.log.error(f"flag files unreadable, stale-flag audit skipped: {exc}")
        return [], str(exc)
