"""Resources (the DuckDB warehouse, the dbt CLI) and the executor, from the settings when the code
location loads, so tests can point each load at a tmp directory."""

from __future__ import annotations

import importlib.metadata
import os
import socket
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

import dagster as dg
from dagster_dbt import DbtCliResource, DbtProject
from dagster_dbt.dbt_project import DagsterDbtProjectPreparer
from dagster_duckdb import DuckDBResource
from packaging import version
from pydantic import PrivateAttr

from .. import run_guard
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


class MvtDbtCliResource(DbtCliResource):
    """dagster-dbt's dbt CLI without two start-up costs of every invocation that this project does
    not use (measured ~4 s of a small night): `dbt --version` in a subprocess (the dbt run is the
    dbt-core installed with this package, `dbt_executable`) and an in-process dbt adapter, which
    dagster-dbt needs only to fetch row counts and column metadata itself (the dbt asset reads those
    from the warehouse after dbt exits, since DuckDB has one writer process)."""

    @cached_property
    def _cli_version(self) -> version.Version:
        return version.parse(importlib.metadata.version("dbt-core"))

    def _initialize_dbt_core_adapter(self, args):
        return None


dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR)
_preparer = VenvDbtPreparer()
if _preparer.using_dagster_dev():
    _preparer.prepare(dbt_project)


class WarehouseResource(DuckDBResource):
    """The warehouse for one run: the run holds the writer lock from set-up to teardown (resources
    of the in-process executor are set up once per run, CLI and daemon runs alike), heals the runs
    that died, and waits for a process that has the DuckDB file open instead of failing at once."""

    lock_wait_s: float = 0.0
    _lock: run_guard.WriterLock | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        run = context.run
        if run is None or context.instance is None or self.database == ":memory:":
            return  # not a run (a sensor, a test's direct use): no lock to take
        instance = context.instance

        def say(message: str) -> None:  # the run's event log (UI), and the console of `mvt` runs
            context.log.info(message)
            run_guard.log.info(message)

        instance.add_run_tags(run.run_id, {run_guard.TAG_PID: str(os.getpid()),
                                           run_guard.TAG_HOST: socket.gethostname()})
        run_guard.mark_run_process()
        lock = run_guard.WriterLock(Path(self.database))
        lock.acquire(run.run_id, self.lock_wait_s, say=say)
        self._lock = lock
        instance.add_run_tags(run.run_id, {run_guard.TAG_WRITER: "1"})
        run_guard.heal_dead_runs(instance, run.run_id, say=say)
        # A reader holding the file would fail the first step: wait for it here, with a clear message.
        run_guard.connect_writable(self.database, self._config(), self.lock_wait_s, say=say).close()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _config(self) -> dict:
        return {"custom_user_agent": "dagster", **self.connection_config}

    @contextmanager
    def get_connection(self):
        conn = run_guard.connect_writable(self.database, self._config(), self.lock_wait_s)
        try:
            yield conn
        finally:
            conn.close()


def build_resources() -> dict:
    s = settings()
    s.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    return {
        # Bounded memory with spill to disk: large nights slow down instead of running out of RAM.
        "duckdb": WarehouseResource(database=str(s.duckdb_path), lock_wait_s=s.runs.lock_wait_s,
                                    connection_config=s.duckdb_config()),
        # dbt through a wrapper that dies with the run process (no orphan dbt after a kill -9).
        "dbt": MvtDbtCliResource(project_dir=dbt_project,
                              dbt_executable=run_guard.dbt_wrapper(dbt_executable(), s.dagster_home / "bin")),
    }


@dg.definitions
def resources() -> dg.Definitions:
    # DuckDB has one writer: run steps one after another in the run's process.
    return dg.Definitions(resources=build_resources(), executor=dg.in_process_executor)
