"""Fault injection for the night (issue #19): run `mvt nightly` in a subprocess of its own workspace
(data dir, warehouse, DAGSTER_HOME), kill it with SIGKILL when a stage starts (seen in the run's
events, or as dbt's process), hold the warehouse from another process, and compare warehouses by
checksums of every table. No test hooks in the pipeline: everything is watched from outside."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd

MVT = str(Path(sys.executable).parent / "mvt")
RUN_TIMEOUT = 600  # one night of the small dataset takes well under a minute: this only stops a hang

# The stages of a night, as the steps that start them.
STAGES = {"ingest": "raw_events", "dbt": "mvt_dbt_models", "analysis": "factorial_effects",
          "reports": "decision_reports"}

# Columns that differ between two runs of the same night by design (when, by which run).
BOOKKEEPING = {"ingested_at", "computed_at", "generated_at", "created_at", "updated_at", "loaded_at", "run_id",
               "stage_key", "published_at", "raised_at", "sent_at", "detected_at", "validated_at", "alert_key",
               "ingested_watermark"}
# Tables that log every run by design: a killed, waiting or repeated run adds its own rows.
PER_RUN_TABLES = {"analysis.alerts"}
# Ids and clock times inside texts (Great Expectations' result JSON names its validation and time).
_VOLATILE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
                       r"|\d{4}-?\d{2}-?\d{2}T\d{2}:?\d{2}:?\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})?")


@dataclass
class Workspace:
    """One isolated installation: its own data dir (dumps, registry, flags, warehouse, reports) and
    its own Dagster instance."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def home(self) -> Path:
        return self.root / "dagster_home"

    @property
    def db(self) -> Path:
        return self.data / "warehouse" / "mvt.duckdb"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MVT_")}
        env.update(MVT_DATA_DIR=str(self.data), MVT_DUCKDB_PATH=str(self.db), MVT_REPORTS_DIR=str(self.data / "reports"),
                   DAGSTER_HOME=str(self.home), MVT_PARTITIONS_START="2026-10-01", **extra)
        return env

    def copy(self, root: Path) -> Workspace:
        """The same installation elsewhere (paths inside it are relative to its folders)."""
        shutil.copytree(self.root, root, ignore=shutil.ignore_patterns("*.writer.lock", "bin"))
        return Workspace(root)

    def start(self, night: str, **env: str) -> subprocess.Popen:
        return subprocess.Popen([MVT, "nightly", "--date", night], env=self.env(**env), cwd=self.root,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def night(self, night: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([MVT, "nightly", "--date", night], env=self.env(**env), cwd=self.root,
                              capture_output=True, text=True, timeout=RUN_TIMEOUT)

    def instance(self):
        import dagster as dg

        return dg.DagsterInstance.from_config(str(self.home))


def step_events(instance, run_id: str) -> list[tuple[str, str, float]]:
    """(event type, step key, timestamp) of the run's step starts and ends, in order."""
    import dagster as dg

    kinds = {dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE}
    out = []
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is not None and event.event_type in kinds:
            out.append((event.event_type.value, event.step_key, entry.timestamp))
    return out


def children(pid: int) -> list[int]:
    """Every live descendant process of pid (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, parent in parents.items() if parent == p]
        found += kids
        frontier += kids
    return found


def alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


def is_dbt(pid: int) -> bool:
    try:
        return b"dbt" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def kill_at_stage(ws: Workspace, proc: subprocess.Popen, stage: str, timeout: float = RUN_TIMEOUT,
                  run_id: str | None = None) -> list[int]:
    """SIGKILL the night when its stage has begun (the step started; for dbt: dbt's process runs).
    Returns the dbt processes the night had started then (looked up before the kill: once dbt has
    died with its run, /proc no longer says what it was). `run_id`: the night's run, when already
    known (else the first run that starts)."""
    step = STAGES[stage]
    instance = ws.instance()
    before = {r.run_id for r in instance.get_runs()}  # the copied installation's earlier nights
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the night ended before stage {stage}: {proc.stdout.read()}")
        runs = ([instance.get_run_by_id(run_id)] if run_id else
                [r for r in instance.get_runs() if r.run_id not in before])
        if runs and any(kind == "STEP_START" and key == step for kind, key, _ in step_events(instance, runs[0].run_id)):
            dbt = [k for k in children(proc.pid) if is_dbt(k)]
            if stage != "dbt" or dbt:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                proc.stdout.close()
                return dbt
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"stage {stage} did not start within {timeout} s")


def _normal(value, root: str):
    if isinstance(value, float):
        # DuckDB's parallel sums differ in the last bits from run to run (relative 1e-14 here):
        # 11 significant digits (not fewer: sums of cents such as 21779642.55 sit on a rounding
        # boundary at 9), and anything below 1e-9 is zero (a sum that is 0 comes out as +-1e-17)
        if value != value:
            return "nan"
        return "0" if abs(value) < 1e-9 else format(value, ".11g")
    if isinstance(value, str):
        return _VOLATILE.sub("<volatile>", value.replace(root, "<ws>"))
    return str(value)


def checksums(ws: Workspace) -> dict[str, tuple[int, str]]:
    """schema.table -> (rows, sha256 of its sorted rows) for every table and view of the warehouse
    but the per-run logs, without the bookkeeping columns; floats to 11 significant digits, the
    workspace's path as <ws>."""
    root = str(ws.root)
    out = {}
    with duckdb.connect(str(ws.db), read_only=True) as conn:
        tables = conn.execute("select table_schema, table_name from information_schema.tables "
                              "where table_catalog = current_database() order by 1, 2").fetchall()
        for schema, table in tables:
            if f"{schema}.{table}" in PER_RUN_TABLES:
                continue
            frame: pd.DataFrame = conn.execute(f'select * from "{schema}"."{table}"').df()
            keep = sorted(c for c in frame.columns if c.lower() not in BOOKKEEPING and not c.lower().endswith("_run_id"))
            rows = sorted("\x1f".join(_normal(v, root) for v in row) for row in frame[keep].itertuples(index=False))
            digest = hashlib.sha256("\x1e".join([",".join(keep), *rows]).encode()).hexdigest()
            out[f"{schema}.{table}"] = (len(rows), digest)
    return out


def report_files(ws: Workspace) -> dict[str, bool]:
    """Every report page -> whether it is complete (ends with </html>)."""
    base = ws.data / "reports"
    return {str(p.relative_to(base)): p.read_text(errors="replace").rstrip().endswith("</html>")
            for p in sorted(base.rglob("*.html"))} if base.exists() else {}


def hold_reader(db: Path, seconds: float) -> subprocess.Popen:
    """Another process with a read-only connection open on the warehouse for `seconds`; it prints
    'open' once the connection is open."""
    code = ("import sys, time, duckdb\nc = duckdb.connect(sys.argv[1], read_only=True)\nprint('open', flush=True)\n"
            "time.sleep(float(sys.argv[2]))\nc.close()\nprint('closed', flush=True)\ntime.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(db), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "open"
    return proc


def hold_lock(db: Path, run_id: str) -> subprocess.Popen:
    """Another process holding the warehouse's writer lock as run `run_id` until killed; it prints
    'held' once the lock is taken."""
    code = ("import sys, time\nfrom pathlib import Path\nfrom mvt_pipeline.run_guard import WriterLock\n"
            "assert WriterLock(Path(sys.argv[1])).try_acquire(sys.argv[2])\nprint('held', flush=True)\n"
            "time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(db), run_id], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def stop(*procs: subprocess.Popen | None, timeout: float = RUN_TIMEOUT) -> None:
    """Kill and reap the helper processes a case started (None: not started)."""
    for proc in procs:
        if proc is not None:
            proc.kill()
            proc.wait(timeout)

