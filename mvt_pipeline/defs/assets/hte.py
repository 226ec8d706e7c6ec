import dagster as dg
from dagster_duckdb import DuckDBResource

from ...analysis.hte_table import all_hte
from ...config import settings
from ...registry import load_registry
from ..resources import WAREHOUSE_POOL
from .warehouse_io import as_of_date, replace_rows


@dg.asset(group_name="analysis", deps=["agg_cell_stats"], pool=WAREHOUSE_POOL, kinds={"python", "duckdb"})
def hte_effects(context: dg.AssetExecutionContext, duckdb: DuckDBResource) -> dg.MaterializeResult:
    """Effects per segment (registry `segments`) with Cochran's Q heterogeneity tests, BH across
    segments and empirical-Bayes shrinkage, into `analysis.hte` and `analysis.hte_heterogeneity`."""
    registry = load_registry(settings().registry_dir)
    as_of = as_of_date(context)
    with duckdb.get_connection() as conn:
        cells = conn.execute("select * from marts.agg_cell_stats where segment <> 'overall'").df()
        segments, hetero, skipped = all_hte(registry, cells)
        replace_rows(conn, "hte", segments, as_of)
        replace_rows(conn, "hte_heterogeneity", hetero, as_of)
    flagged = hetero[hetero["q_value"] < 0.05] if len(hetero) else hetero
    return dg.MaterializeResult(metadata={
        "segment_effects": len(segments),
        "heterogeneity_tests": len(hetero),
        "heterogeneous_effects_q_lt_0.05": dg.MetadataValue.md(
            flagged[["experiment_id", "metric", "segment_variable", "term", "level", "q_stat", "p_value", "q_value"]]
            .to_markdown(index=False) if len(flagged) else "(none)"),
        "skipped": dg.MetadataValue.json(skipped),
    })
