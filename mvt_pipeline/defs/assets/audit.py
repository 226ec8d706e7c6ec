import dagster as dg
import pandas as pd
from dagster_duckdb import DuckDBResource

from ...audit import NEEDS_ACTION, audit_flags, load_flag_files
from ...config import settings
from ...registry import load_registry
from ..resources import WAREHOUSE_POOL
from .warehouse_io import as_of_date, replace_rows


@dg.asset(
    group_name="reporting",
    deps=["stg_events"],
    check_specs=[dg.AssetCheckSpec("no_stale_flags", asset="stale_flag_audit",
                                   description="WARN while any flag needs clean-up.")],
    pool=WAREHOUSE_POOL,
    kinds={"python"},
)
def stale_flag_audit(context: dg.AssetExecutionContext, duckdb: DuckDBResource):
    """Classify every feature flag (flagd files) against the registry and exposure activity into
    `analysis.stale_flags`, with owner, age and the recommended action."""
    s = settings()
    registry = load_registry(s.registry_dir)
    flags = load_flag_files(s.flags_dir) if s.flags_dir.exists() else []
    as_of = as_of_date(context)
    with duckdb.get_connection() as conn:
        last = conn.execute(
            "select experiment_id, max(ts) as last_exposure_at, count(distinct unit_id) as units"
            " from staging.stg_events where event_type = 'exposure' group by 1"
        ).df()
        audit = audit_flags(flags, registry, last, as_of)
        replace_rows(conn, "stale_flags", audit, as_of)
    counts = audit["classification"].value_counts().to_dict() if not audit.empty else {}
    yield dg.MaterializeResult(metadata={
        "flags": len(flags),
        "by_class": dg.MetadataValue.json({k: int(v) for k, v in counts.items()}),
    })
    action = audit[audit["classification"].isin(NEEDS_ACTION)] if not audit.empty else audit
    yield dg.AssetCheckResult(
        check_name="no_stale_flags", passed=action.empty, severity=dg.AssetCheckSeverity.WARN,
        metadata={"needs_action": dg.MetadataValue.md(
            action[["flag_key", "classification", "owner", "recommended_action"]].to_markdown(index=False)
            if not action.empty else "(none)")},
    )
