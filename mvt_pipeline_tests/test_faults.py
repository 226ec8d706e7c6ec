"""Fault injection (issue #19): a night killed with SIGKILL at each stage, then run again, leaves the
warehouse identical to an uninterrupted night; two nights at once run one after the other; a reader
holding the warehouse is waited for, or fails the night clearly. Every process runs under a timeout.

One generated dataset (2 days) is shared; each case copies that installation and runs its first
night. Each night costs about a minute here, so `make test` runs two cases: SIGTERM while waiting,
and a night killed in dbt while another waits (kill -9, dbt dying with its run, healing, the waiting
message and identical checksums in one pair of runs). The kill at every stage, two nights at once and
the reader cases are marked `faults_full` and run with `make test-faults`.
"""

from __future__ import annotations

import signal
import subprocess
import time

import dagster as dg
import duckdb
import pytest

from mvt_pipeline.ingest.dump_folders import dump_days

from .conftest import SAMPLE_FLAGS, SAMPLE_REGISTRY
from .faults import (RUN_TIMEOUT, STAGES, Workspace, alive, checksums, hold_lock, hold_reader, kill_at_stage,
                     report_files, step_events, stop)
from .pipeline_runner import generate


def _ok(proc: subprocess.CompletedProcess | tuple[int, str]) -> str:
    code, out = (proc.returncode, proc.stdout + proc.stderr) if isinstance(proc, subprocess.CompletedProcess) else proc
    assert code == 0 and " ok in " in out, out[-3000:]
    return out


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[Workspace, list[str]]:
    """An installation with its dumps, registry and flags, before any night."""
    import shutil

    ws = Workspace(tmp_path_factory.mktemp("faults") / "base")
    shutil.copytree(SAMPLE_REGISTRY, ws.data / "registry")
    shutil.copytree(SAMPLE_FLAGS, ws.data / "flags")
    generate(ws.data, users=1500, days=2, seed=19)
    ws.home.mkdir(parents=True)  # the instance the cases watch; `mvt` writes its dagster.yaml
    return ws, dump_days(ws.data / "raw")


@pytest.fixture(scope="module")
def reference(base, tmp_path_factory):
    """The night uninterrupted: every table's checksum and the report pages."""
    ws, days = base
    ref = ws.copy(tmp_path_factory.mktemp("faults") / "reference")
    _ok(ref.night(NIGHT(days)))
    pages = report_files(ref)
    assert pages and all(pages.values()), pages
    return checksums(ref), pages


def NIGHT(days: list[str]) -> str:  # noqa: N802 - the night every case runs: the last day, both days' data
    return days[-1]


def _assert_same_warehouse(ws: Workspace, reference) -> None:
    tables, pages = reference
    got = checksums(ws)
    assert got.keys() == tables.keys()
    differ = {t: (got[t], tables[t]) for t in tables if got[t] != tables[t]}
    assert not differ, differ
    assert report_files(ws) == pages


def _assert_died(dbt: list[int]) -> None:
    """dbt (these pids, found before the kill) died with its run: no orphan keeps the warehouse open."""
    assert dbt
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(p) for p in dbt):
        time.sleep(0.1)
    assert not any(alive(p) for p in dbt), "dbt outlived the killed run"


def _assert_healed(ws: Workspace, killed) -> None:
    """The killed run was marked failed by the next one and its pool slots were freed."""
    instance = ws.instance()
    assert instance.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.FAILURE
    failure = instance.all_logs(killed.run_id, of_type=dg.DagsterEventType.PIPELINE_FAILURE)[0]
    assert "found dead by run" in failure.message
    assert instance.event_log_storage.get_concurrency_run_ids() == set()


FULL = pytest.mark.faults_full


@pytest.mark.parametrize("stage", [pytest.param(s, marks=FULL) for s in STAGES])
def test_a_night_killed_at_each_stage_heals_and_reruns_to_the_same_warehouse(stage, base, reference, tmp_path):
    ws, days = base
    ws = ws.copy(tmp_path / "ws")
    before = {r.run_id for r in ws.instance().get_runs()}
    proc = ws.start(NIGHT(days))
    dbt = kill_at_stage(ws, proc, stage)
    if stage == "dbt":  # dbt dies with its run: no orphan keeps the warehouse open
        _assert_died(dbt)
    (killed,) = [r for r in ws.instance().get_runs() if r.run_id not in before]
    assert killed.status == dg.DagsterRunStatus.STARTED  # what a kill -9 leaves behind

    _ok(ws.night(NIGHT(days)))  # no person needed: ends (under the timeout), not blocked by the dead run's slot
    _assert_healed(ws, killed)
    _assert_same_warehouse(ws, reference)


@FULL
def test_two_nights_at_once_run_one_after_the_other(base, reference, tmp_path):
    ws, days = base
    ws = ws.copy(tmp_path / "ws")
    instance = ws.instance()
    before = {r.run_id for r in instance.get_runs()}
    first = ws.start(NIGHT(days))
    deadline = time.monotonic() + RUN_TIMEOUT
    while not [r for r in instance.get_runs(filters=dg.RunsFilter(tags={"mvt/writer": "1"}))
               if r.run_id not in before]:  # the first holds the lock
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.05)
    second = ws.start(NIGHT(days))
    outs = [p.communicate(timeout=RUN_TIMEOUT)[0] for p in (first, second)]
    for proc, out in zip((first, second), outs):
        _ok((proc.returncode, out))
    assert "waiting for the warehouse: run " in outs[1]  # the console says what it waits for

    runs = sorted((r for r in ws.instance().get_runs(filters=dg.RunsFilter(tags={"dagster/partition": NIGHT(days)}))
                   if r.run_id not in before),
                  key=lambda r: ws.instance().get_run_stats(r.run_id).start_time)
    assert len(runs) == 2 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    a, b = (step_events(ws.instance(), r.run_id) for r in runs)
    assert max(t for *_, t in a) <= min(t for *_, t in b), "the runs' steps interleaved"
    logs = [e.message for e in ws.instance().all_logs(runs[1].run_id) if e.message]
    assert any(f"waiting for the warehouse: run {runs[0].run_id}" in m for m in logs)
    _assert_same_warehouse(ws, reference)


@FULL
def test_a_reader_holding_the_warehouse(base, reference, tmp_path):
    ws, days = base
    ws = ws.copy(tmp_path / "ws")
    ws.db.parent.mkdir(parents=True, exist_ok=True)
    duckdb.connect(str(ws.db)).close()  # an existing warehouse (read-only connections cannot create one)
    reader = hold_reader(ws.db, 600)
    try:  # kept open: the night fails, saying who holds the warehouse
        proc = ws.night(NIGHT(days), MVT_LOCK_WAIT_SECONDS="2")
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0
        assert f"the warehouse is opened by another process (pid {reader.pid}) — DuckDB allows one writer" in out, out[-3000:]
    finally:
        stop(reader)
    reader = hold_reader(ws.db, RUN_TIMEOUT)
    night = ws.start(NIGHT(days), MVT_LOCK_WAIT_SECONDS="120")
    try:  # closed while the night waits for it: the night then runs
        lines: list[str] = []
        deadline = time.monotonic() + RUN_TIMEOUT
        while not any("opened by another process" in line for line in lines):
            assert time.monotonic() < deadline and night.poll() is None, "".join(lines)[-3000:]
            lines.append(night.stdout.readline())
        reader.kill()
        reader.wait(RUN_TIMEOUT)
        out, _ = night.communicate(timeout=RUN_TIMEOUT)
        _ok((night.returncode, "".join(lines) + out))
    finally:
        stop(reader, night)
    _assert_same_warehouse(ws, reference)


def test_sigterm_ends_a_night_waiting_for_the_warehouse(base, tmp_path):
    ws, days = base
    ws = ws.copy(tmp_path / "ws")
    holder = hold_lock(ws.db, "run-elsewhere")
    waiting = None
    try:
        waiting = ws.start(NIGHT(days))
        deadline = time.monotonic() + RUN_TIMEOUT
        lines = []
        while not any("waiting for the warehouse: run run-elsewhere" in line for line in lines):
            assert time.monotonic() < deadline and waiting.poll() is None, "".join(lines)
            lines.append(waiting.stdout.readline())
        waiting.send_signal(signal.SIGTERM)
        waiting.communicate(timeout=30)  # promptly (on a loaded machine too): not waiting out the lock
        assert waiting.returncode != 0
    finally:
        stop(holder, waiting)
    (run,) = [r for r in ws.instance().get_runs() if r.status != dg.DagsterRunStatus.SUCCESS]
    assert run.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)


def test_a_night_killed_in_dbt_while_another_waits(base, reference, tmp_path):
    """Both faults in one pair of runs (each night costs a minute): the second night waits for the
    first, which is killed in dbt; dbt dies with it, and the second heals it and runs the night."""
    ws, days = base
    ws = ws.copy(tmp_path / "ws")
    instance = ws.instance()
    first = ws.start(NIGHT(days))
    deadline = time.monotonic() + RUN_TIMEOUT
    while not instance.get_runs(filters=dg.RunsFilter(tags={"mvt/writer": "1"})):  # the first holds the lock
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.05)
    (killed,) = instance.get_runs()
    second = ws.start(NIGHT(days))
    lines: list[str] = []  # the console says what it waits for, before the first is killed
    while not any(f"waiting for the warehouse: run {killed.run_id}" in line for line in lines):
        assert time.monotonic() < deadline and second.poll() is None and first.poll() is None, "".join(lines)[-3000:]
        lines.append(second.stdout.readline())
    dbt = kill_at_stage(ws, first, "dbt", run_id=killed.run_id)
    _assert_died(dbt)
    out = "".join(lines) + second.communicate(timeout=RUN_TIMEOUT)[0]
    _ok((second.returncode, out))
    _assert_healed(ws, killed)
    _assert_same_warehouse(ws, reference)
