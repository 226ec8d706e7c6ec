"""Resources (the DuckDB warehouse, the dbt CLI) and the executor, from the settings when the code
location loads, so tests can point each load at a tmp directory."""

from __future__ import annotations

import dagster as dg
from dagster_dbt import DbtCliResource, DbtProject
from dagster_dbt.dbt_project import DagsterDbtProjectPreparer
from dagster_duckdb import DuckDBResource

from ..config import DBT_PROJECT_DIR, dbt_executable, export_dbt_environment, settings

# Every asset that writes the warehouse runs in this pool; the instance limits it to one slot
# (dagster.yaml written by `make`), since DuckDB allows one writer process.
WAREHOUSE_POOL = "duckdb_warehouse"


class VenvDbtPreparer(DagsterDbtProjectPreparer):
    """`dagster dev` re-parses the dbt project at load. dagster-dbt's own preparer calls a bare `dbt`,
    which is not found when the venv's bin folder is not on PATH: call the dbt beside this Python."""

    def prepare(self, project: DbtProject) -> None:
        export_dbt_environment()
        DbtCliResource(project_dir=project, dbt_executable=dbt_executable()).cli(
            ["parse", "--quiet"], target_path=project.target_path).wait()


dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR)
_preparer = VenvDbtPreparer()
if _preparer.using_dagster_dev():
    _preparer.prepare(dbt_project)


def build_resources() -> dict:
    s = settings()
    s.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    return {
        # Bounded memory with spill to disk: large nights slow down instead of running out of RAM.
        "duckdb": DuckDBResource(database=str(s.duckdb_path), connection_config={
            "memory_limit": s.duckdb_memory_limit, "temp_directory": str(s.duckdb_temp_dir)}),
        "dbt": DbtCliResource(project_dir=dbt_project, dbt_executable=dbt_executable()),
    }


@dg.definitions
def resources() -> dg.Definitions:
    # DuckDB has one writer: run steps one after another in the run's process.
    return dg.Definitions(resources=build_resources(), executor=dg.in_process_executor)
