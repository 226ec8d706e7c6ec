import dagster as dg
from dagster_duckdb import DuckDBResource

from ...analysis.hte_table import HETEROGENEITY_FLAG_Q, all_hte
from ...config import settings
from ...registry import load_registry
from ...warehouse import store
from ..catalog import analysis_tables_metadata, experiment_owners
from ..night_scope import stage_key
from ..partitions import daily_partitions, night_of, one_night_per_run
from ..resources import WAREHOUSE_POOL


@one_night_per_run
@dg.asset(group_name="analysis", partitions_def=daily_partitions, deps=["agg_cell_stats"], pool=WAREHOUSE_POOL,
          kinds={"python", "duckdb"}, owners=experiment_owners())
def hte_effects(context: dg.AssetExecutionContext, duckdb: DuckDBResource) -> dg.MaterializeResult:
    """Effects per segment (registry `segments`) with Cochran's Q heterogeneity tests, BH across
    segments and empirical-Bayes shrinkage, into `analysis.hte` and `analysis.hte_heterogeneity`."""
    registry = load_registry(settings().registry_dir)
    as_of = night_of(context)
    with duckdb.get_connection() as conn:
        store.require_marts_for(conn, as_of)
        segments, hetero, skipped = all_hte(registry, store.cell_stats(conn, overall=False))
        key = stage_key(context)
        store.replace_nights(conn, {"hte": segments, "hte_heterogeneity": hetero}, as_of, stage_key=key)
        counts = {name: store.table_row_count(conn, name, as_of, key) for name in ("hte", "hte_heterogeneity")}
    flagged = hetero[hetero["q_value"] < HETEROGENEITY_FLAG_Q] if len(hetero) else hetero
    return dg.MaterializeResult(metadata={
        **analysis_tables_metadata(counts),
        "segment_effects": len(segments),
        "heterogeneity_tests": len(hetero),
        f"heterogeneous_effects_q_lt_{HETEROGENEITY_FLAG_Q}": dg.MetadataValue.md(
            flagged[["experiment_id", "metric", "segment_variable", "term", "level", "q_stat", "p_value", "q_value"]]
            .to_markdown(index=False) if len(flagged) else "(none)"),
        "skipped": dg.MetadataValue.json(skipped),
    })
