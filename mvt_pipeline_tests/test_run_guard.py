"""The writer lock, the waits (reader, SIGTERM), healing of dead runs, the generated dagster.yaml and
the dbt wrapper (issue #19): each behaviour on its own, in small subprocesses under timeouts."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from mvt_pipeline import run_guard
from mvt_pipeline.run_guard import WarehouseBusy, WriterLock

from .faults import hold_lock, hold_reader, stop

TIMEOUT = 60


def _python(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_line(proc: subprocess.Popen, expected: str) -> None:
    line = proc.stdout.readline()
    assert expected in line, (line, proc.stderr.read() if proc.poll() is not None else "")


def test_lock_is_exclusive_names_its_holder_and_gives_up_with_a_clear_error(tmp_path):
    db = tmp_path / "w.duckdb"
    first, second = WriterLock(db), WriterLock(db)
    assert first.try_acquire("run-a")
    said = []
    with pytest.raises(WarehouseBusy, match="run run-a .*holds it.*MVT_LOCK_WAIT_SECONDS"):
        second.acquire("run-b", wait_s=0.6, say=said.append)
    assert said and said[0].startswith("waiting for the warehouse: run run-a (pid ") and str(os.getpid()) in said[0]
    first.release()
    second.acquire("run-b", wait_s=1)
    assert second.holder().run_id == "run-b"
    second.release()


def test_lock_of_a_killed_process_is_free_at_once(tmp_path):
    db = tmp_path / "w.duckdb"
    proc = hold_lock(db, "run-holder")
    try:
        assert not WriterLock(db).try_acquire("run-b")
        proc.kill()
        proc.wait(TIMEOUT)
        lock = WriterLock(db)
        lock.acquire("run-b", wait_s=10)
        lock.release()
    finally:
        stop(proc, timeout=TIMEOUT)


def test_sigterm_ends_a_run_waiting_for_the_lock_promptly(tmp_path):
    db = tmp_path / "w.duckdb"
    holder = hold_lock(db, "run-holder")
    waiter = None
    try:
        waiter = _python("""
            import sys
            from pathlib import Path
            from mvt_pipeline.run_guard import WriterLock
            print("waiting", flush=True)
            WriterLock(Path(sys.argv[1])).acquire("run-w", wait_s=3600, say=lambda m: print(m, flush=True))
        """, str(db))
        _wait_line(waiter, "waiting")
        _wait_line(waiter, "waiting for the warehouse: run run-holder")
        waiter.send_signal(signal.SIGTERM)
        waiter.wait(timeout=10)  # promptly, not after the hour
        assert waiter.returncode != 0
        assert "RunInterrupted: SIGTERM received while waiting for the warehouse" in waiter.stderr.read()
    finally:
        stop(holder, waiter, timeout=TIMEOUT)


def test_sigterm_swallowed_by_a_log_handler_still_ends_the_wait(tmp_path):
    """The signal may land inside a logging handler, which swallows the exception ("--- Logging
    error ---"): the wait still ends, promptly."""
    db = tmp_path / "w.duckdb"
    holder = hold_lock(db, "run-holder")
    waiter = None
    try:
        waiter = _python("""
            import sys, time
            from pathlib import Path
            from mvt_pipeline.run_guard import WriterLock

            def say(message):  # like logging.Handler.emit: any exception is reported and swallowed
                print(message, flush=True)
                try:
                    time.sleep(5)
                except BaseException as exc:
                    print("swallowed", type(exc).__name__, flush=True)

            WriterLock(Path(sys.argv[1])).acquire("run-w", wait_s=3600, say=say)
        """, str(db))
        _wait_line(waiter, "waiting for the warehouse: run run-holder")
        waiter.send_signal(signal.SIGTERM)
        waiter.wait(timeout=10)
        assert waiter.returncode != 0
        assert "swallowed RunInterrupted" in waiter.stdout.read()
        assert "RunInterrupted: SIGTERM received while waiting for the warehouse" in waiter.stderr.read()
    finally:
        stop(holder, waiter, timeout=TIMEOUT)


@pytest.fixture
def db(tmp_path) -> str:
    path = str(tmp_path / "w.duckdb")
    duckdb.connect(path).close()
    return path


@contextlib.contextmanager
def _reader(db: str, seconds: float):
    """Another process holding a read-only connection on `db` for `seconds` (open on entry)."""
    reader = hold_reader(Path(db), seconds)
    try:
        yield reader
    finally:
        stop(reader, timeout=TIMEOUT)


def test_writer_waits_for_a_reader_then_connects(db):
    with _reader(db, 1.5):
        said = []
        conn = run_guard.connect_writable(db, {}, wait_s=30, say=said.append, first_delay_s=0.1, max_delay_s=0.5)
        conn.execute("create table t as select 1 as x")
        conn.close()
        assert said and "opened by another process (pid " in said[0] and "DuckDB allows one writer" in said[0]


def test_writer_fails_clearly_when_the_reader_stays(db):
    with _reader(db, 600) as reader:
        with pytest.raises(WarehouseBusy, match=rf"opened by another process \(pid {reader.pid}\) — DuckDB allows one writer"):
            run_guard.connect_writable(db, {}, wait_s=1, say=lambda _m: None, first_delay_s=0.1)
    run_guard.connect_writable(db, {}, wait_s=1).close()  # the next run is fine


def test_merge_keeps_the_users_keys_and_adds_the_missing_ones():
    required = run_guard.instance_settings(3600)
    merged = run_guard.merge_missing({"telemetry": {"enabled": True}, "storage": {"sqlite": {"base_dir": "x"}},
                                      "run_monitoring": {"poll_interval_seconds": 5}}, required)
    assert merged["telemetry"] == {"enabled": True} and merged["storage"] == {"sqlite": {"base_dir": "x"}}
    assert merged["run_monitoring"]["poll_interval_seconds"] == 5
    assert merged["run_monitoring"]["max_runtime_seconds"] == 3600 and merged["run_monitoring"]["enabled"] is True
    assert merged["concurrency"] == {"pools": {"default_limit": 1}, "runs": {"max_concurrent_runs": 1}}


def test_ensure_dagster_home_upgrades_an_existing_dagster_yaml(tmp_path, monkeypatch):
    from mvt_pipeline.nights import ensure_dagster_home

    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\nconcurrency:\n  pools:\n    default_limit: 1\n"
                                       "retention:\n  schedule:\n    purge_after_days: 7\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("MVT_RUN_TIMEOUT_SECONDS", "7200")
    ensure_dagster_home()
    config = yaml.safe_load((home / "dagster.yaml").read_text())
    assert config["retention"] == {"schedule": {"purge_after_days": 7}}
    assert config["run_monitoring"]["max_runtime_seconds"] == 7200
    assert config["run_monitoring"]["free_slots_after_run_end_seconds"] > 0
    assert config["concurrency"]["runs"] == {"max_concurrent_runs": 1}
    assert not list(home.glob(".dagster.yaml*"))
    instance = dg.DagsterInstance.from_config(str(home))  # Dagster accepts it
    assert instance.run_monitoring_enabled and instance.run_monitoring_max_runtime_seconds == 7200
    ensure_dagster_home()  # idempotent
    assert yaml.safe_load((home / "dagster.yaml").read_text()) == config


def _started_run(instance, job_name: str, tags: dict) -> dg.DagsterRun:
    run = instance.create_run_for_job(dg.GraphDefinition(name=job_name, node_defs=[]).to_job(), tags=tags)
    instance.handle_run_event(run.run_id, dg.DagsterEvent(
        event_type_value=dg.DagsterEventType.PIPELINE_START.value, job_name=job_name, message="started"))
    return instance.get_run_by_id(run.run_id)


def test_heal_marks_dead_runs_failed_and_frees_their_slots(tmp_path):
    import socket

    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        host = socket.gethostname()
        dead_pid = subprocess.Popen([sys.executable, "-c", "pass"])
        dead_pid.wait(TIMEOUT)
        writer = _started_run(instance, "w", {run_guard.TAG_WRITER: "1", run_guard.TAG_HOST: host,
                                              run_guard.TAG_PID: str(os.getpid())})
        gone = _started_run(instance, "g", {run_guard.TAG_HOST: host, run_guard.TAG_PID: str(dead_pid.pid)})
        alive = _started_run(instance, "a", {run_guard.TAG_HOST: host, run_guard.TAG_PID: str(os.getpid())})
        foreign = _started_run(instance, "f", {})
        instance.event_log_storage.set_concurrency_slots("duckdb_warehouse", 1)
        claim = instance.event_log_storage.claim_concurrency_slot("duckdb_warehouse", writer.run_id, "step")
        assert claim.is_claimed
        said = []
        healed = run_guard.heal_dead_runs(instance, "own-run", say=said.append)
        assert set(healed) == {writer.run_id, gone.run_id}
        for run in (writer, gone):
            assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        for run in (alive, foreign):
            assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
        assert instance.event_log_storage.get_concurrency_info("duckdb_warehouse").active_slot_count == 0
        failure = instance.all_logs(writer.run_id, of_type=dg.DagsterEventType.PIPELINE_FAILURE)[0]
        assert "found dead by run own-run" in failure.message
        assert any(writer.run_id in m for m in said)


def test_dbt_wrapper_dies_with_its_parent(tmp_path):
    fake_dbt = tmp_path / "fake-dbt"
    fake_dbt.write_text("#!/bin/sh\necho \"dbt $$ $*\"\nexec sleep 600\n")
    fake_dbt.chmod(0o755)
    wrapper = run_guard.dbt_wrapper(str(fake_dbt), tmp_path / "bin")
    assert wrapper != str(fake_dbt) and os.access(wrapper, os.X_OK)
    parent = _python("""
        import os, subprocess, sys, time
        os.environ["MVT_RUN_PID"] = str(os.getpid())
        child = subprocess.Popen([sys.argv[1], "run", "--quiet"], stdout=subprocess.PIPE, text=True)
        print(child.stdout.readline().strip(), flush=True)
        time.sleep(600)
    """, wrapper)
    try:
        line = parent.stdout.readline().split()
        assert line[0] == "dbt" and line[2:] == ["run", "--quiet"], line
        dbt_pid = int(line[1])
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(TIMEOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _exists(dbt_pid):
            time.sleep(0.1)
        assert not _exists(dbt_pid), "dbt outlived the run"
    finally:
        parent.kill()
        parent.wait(TIMEOUT)


def _exists(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False
