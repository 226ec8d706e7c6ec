"""Resources: the DuckDB warehouse and the dbt CLI, both pointed at paths from the environment."""

from __future__ import annotations

import os

from dagster_dbt import DbtCliResource, DbtProject
from dagster_duckdb import DuckDBResource

from ..config import DBT_PROJECT_DIR, dbt_executable, settings

# Every asset that writes the warehouse runs in this pool; the instance limits it to one slot
# (dagster.yaml written by `make`), since DuckDB allows one writer process.
WAREHOUSE_POOL = "duckdb_warehouse"

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR)
dbt_project.prepare_if_dev()


def build_resources() -> dict:
    s = settings()
    s.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    return {
        # Bounded memory with spill to disk: large nights slow down instead of running out of RAM.
        "duckdb": DuckDBResource(database=str(s.duckdb_path), connection_config={
            "memory_limit": os.environ.get("MVT_DUCKDB_MEMORY_LIMIT", "4GB"),
            "temp_directory": str(s.duckdb_path.parent / "duckdb_tmp"),
        }),
        "dbt": DbtCliResource(project_dir=dbt_project, dbt_executable=dbt_executable()),
    }
