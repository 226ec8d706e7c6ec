"""One writing run at a time, and runs that heal what a killed run left behind (issue #19).

DuckDB allows one writer process, and Dagster's pool slot of a run killed with `kill -9` stays
claimed forever. So every run that writes the warehouse first takes an exclusive `flock` on
`<warehouse>.writer.lock`: the kernel drops it when the process dies, however it dies, so a held
lock always means a live writer. Once a run holds it, any other run still marked STARTING/STARTED
that took (or waited for) the lock is dead: it is marked failed and its pool slots are freed.

No Dagster imports at module level: the lock and the retries are plain code, tested without Dagster.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("mvt_pipeline.run_guard")

LOG_EVERY_S = 30.0  # a waiting run says what it waits for this often (INFO)
POLL_S = 0.25
TAG_PID = "mvt/pid"  # the run's process (tagged before it waits for the lock)
TAG_HOST = "mvt/host"
TAG_WRITER = "mvt/writer"  # "1" once the run held the writer lock
RUN_PID_ENV = "MVT_RUN_PID"  # read by the dbt wrapper: the run process dbt must die with


class WarehouseBusy(RuntimeError):
    """The warehouse stayed held (writer lock or a DuckDB reader) longer than the run may wait."""


class RunInterrupted(RuntimeError):
    """SIGTERM/SIGINT arrived while the run waited: it ends now instead of waiting on."""


def lock_path(duckdb_path: Path) -> Path:
    return Path(str(duckdb_path) + ".writer.lock")


@dataclass
class Holder:
    """Who holds the writer lock, as the holder wrote it into the lock file (for messages only)."""

    run_id: str = "?"
    pid: str = "?"
    since: str = "?"

    @classmethod
    def parse(cls, text: str) -> Holder:
        fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        return cls(run_id=fields.get("run_id", "?"), pid=fields.get("pid", "?"), since=fields.get("since", "?"))

    def describe(self) -> str:
        return f"run {self.run_id} (pid {self.pid}, since {self.since})"


class Interrupt:
    """The signal received inside `interruptible`, if any. The handler raises at once, but code the
    signal lands in may swallow it (a logging handler's `emit` does, printing "--- Logging error ---"),
    so the waits also `check()` after every step."""

    signum: int | None = None

    def check(self) -> None:
        if self.signum is not None:
            raise RunInterrupted(f"{signal.Signals(self.signum).name} received while waiting for the warehouse")


@contextlib.contextmanager
def interruptible() -> Iterator[Interrupt]:
    """SIGTERM/SIGINT raise RunInterrupted inside the block. Dagster defers these signals during a
    run, and a run that waits would then never see them; the previous handlers come back after."""
    state = Interrupt()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def _raise(signum, _frame):
        state.signum = signum
        state.check()

    previous = {sig: signal.signal(sig, _raise) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield state
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class WriterLock:
    """The exclusive writer lock on a file beside the warehouse (kill -9 safe: the kernel frees it)."""

    def __init__(self, duckdb_path: Path):
        self.path = lock_path(duckdb_path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def holder(self) -> Holder:
        try:
            return Holder.parse(self.path.read_text())
        except OSError:
            return Holder()

    def try_acquire(self, run_id: str) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        since = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"run_id={run_id}\npid={os.getpid()}\nhost={socket.gethostname()}\nsince={since}\n".encode(), 0)
        self._fd = fd
        return True

    def acquire(self, run_id: str, wait_s: float, say: Callable[[str], None] = log.info,
                log_every_s: float = LOG_EVERY_S) -> None:
        """Wait (polling, interruptible) up to wait_s for the lock, saying every log_every_s who holds it."""
        deadline = time.monotonic() + wait_s
        next_say = 0.0
        with interruptible() as interrupt:
            while not self.try_acquire(run_id):
                interrupt.check()
                now = time.monotonic()
                if now >= deadline:
                    raise WarehouseBusy(
                        f"gave up after {wait_s:.0f} s waiting for the warehouse writer lock {self.path}: "
                        f"{self.holder().describe()} holds it (one run writes the warehouse at a time; "
                        "raise MVT_LOCK_WAIT_SECONDS to wait longer)")
                if now >= next_say:
                    say(f"waiting for the warehouse: {self.holder().describe()} holds it "
                        f"(one writing run at a time; waiting up to {max(deadline - now, 0):.0f} s more)")
                    next_say = now + log_every_s
                    interrupt.check()
                time.sleep(POLL_S)

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def _conflicting_pid(message: str) -> str:
    """DuckDB names the other process in its lock error: '... Conflicting lock is held in <exe> (PID 123)'."""
    marker = "(PID "
    i = message.find(marker)
    return message[i + len(marker):].split(")", 1)[0].strip() if i >= 0 else "?"


def is_lock_conflict(exc: BaseException) -> bool:
    text = str(exc)
    return "Could not set lock on file" in text or "Conflicting lock" in text


def connect_writable(database: str, config: dict | None, wait_s: float, say: Callable[[str], None] = log.info,
                     first_delay_s: float = 0.5, max_delay_s: float = 30.0):
    """A read-write DuckDB connection; while another process (a reader, a notebook) has the file
    open, retry with backoff for up to wait_s, saying what it waits for, then a clear error."""
    import duckdb

    deadline = time.monotonic() + wait_s
    delay, last_said = first_delay_s, -LOG_EVERY_S
    with interruptible() as interrupt:
        while True:
            interrupt.check()
            try:
                return duckdb.connect(database, read_only=False, config=config or {})
            except duckdb.IOException as exc:
                if not is_lock_conflict(exc):
                    raise
                now, pid = time.monotonic(), _conflicting_pid(str(exc))
                if now >= deadline:
                    raise WarehouseBusy(
                        f"the warehouse is opened by another process (pid {pid}) — DuckDB allows one writer: "
                        f"close that connection (or stop that process) and run again "
                        f"(waited {wait_s:.0f} s)") from exc
                if now - last_said >= LOG_EVERY_S:
                    say(f"waiting for the warehouse: it is opened by another process (pid {pid}); "
                        "DuckDB allows one writer, retrying")
                    last_said = now
                time.sleep(min(delay, max(deadline - now, 0.01)))
                delay = min(delay * 2, max_delay_s)


# --- healing -------------------------------------------------------------------------------------

def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def heal_dead_runs(instance, own_run_id: str | None, say: Callable[[str], None] = log.info) -> list[str]:
    """Mark failed the runs that died while running and free the pool slots they hold.

    Called while holding the writer lock: a run tagged as a writer that is still STARTING/STARTED is
    then dead (the kernel freed its lock); a run tagged with a pid of this host whose process is gone
    is dead too. Slots held by runs that are over are freed as well (a run killed after its failure
    was recorded). Returns the ids of the runs marked failed."""
    from dagster import DagsterRunStatus, RunsFilter

    host = socket.gethostname()
    healed = []
    running = instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTING, DagsterRunStatus.STARTED,
                                                     DagsterRunStatus.CANCELING]))
    for run in running:
        if run.run_id == own_run_id:
            continue
        tags = run.tags
        pid = tags.get(TAG_PID, "")
        same_host = tags.get(TAG_HOST) == host
        if tags.get(TAG_WRITER) == "1" and same_host:
            why = "it held the warehouse writer lock, which its process no longer holds"
        elif same_host and pid.isdigit() and not _pid_alive(int(pid)):
            why = f"its process {pid} is gone"
        else:
            continue
        message = f"found dead by run {own_run_id}: {why} (killed or crashed); marked failed, pool slots freed"
        instance.report_run_failed(run, message)
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        say(f"run {run.run_id} {message}")
        healed.append(run.run_id)
    with contextlib.suppress(NotImplementedError):
        for run_id in instance.event_log_storage.get_concurrency_run_ids() - {own_run_id}:
            run = instance.get_run_by_id(run_id)
            if run is None or run.is_finished:
                instance.event_log_storage.free_concurrency_slots_for_run(run_id)
                say(f"freed the pool slots still held by finished run {run_id}")
    return healed


# --- dbt dies with its run -----------------------------------------------------------------------

DBT_WRAPPER = '''#!{python}
# Written by mvt_pipeline.run_guard. dbt must not outlive the run that started it (kill -9 included):
# ask the kernel to SIGKILL this process when its parent dies, then become dbt.
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass
parent = os.environ.get("{env}", "")
if parent.isdigit() and os.getppid() != int(parent):
    sys.exit("the run that started dbt is gone")
os.execv({dbt!r}, [{dbt!r}] + sys.argv[1:])
'''


def dbt_wrapper(real_dbt: str, folder: Path) -> str:
    """An executable that becomes `real_dbt` after arranging to die with its parent (Linux
    PR_SET_PDEATHSIG); written once per (python, dbt) into folder. Elsewhere: dbt itself."""
    if not sys.platform.startswith("linux"):
        return real_dbt
    text = DBT_WRAPPER.format(python=sys.executable, env=RUN_PID_ENV, dbt=real_dbt)
    path = folder / "dbt-guarded"
    try:
        if not (path.exists() and path.read_text() == text and os.access(path, os.X_OK)):
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".dbt-guarded.{os.getpid()}.tmp"
            tmp.write_text(text)
            tmp.chmod(0o755)
            tmp.replace(path)
    except OSError:
        return real_dbt
    return str(path)


def mark_run_process() -> None:
    """Tell child processes (the dbt wrapper) which process is the run's."""
    os.environ[RUN_PID_ENV] = str(os.getpid())


# --- dagster.yaml --------------------------------------------------------------------------------

def instance_settings(timeout_s: float) -> dict:
    """What the generated dagster.yaml must hold: one pool slot and one queued run at a time, run
    monitoring that fails runs that never start or run too long, and frees slots of ended runs."""
    return {
        "telemetry": {"enabled": False},
        "concurrency": {"pools": {"default_limit": 1}, "runs": {"max_concurrent_runs": 1}},
        "run_monitoring": {"enabled": True, "start_timeout_seconds": 600, "cancel_timeout_seconds": 300,
                           "max_runtime_seconds": int(timeout_s), "poll_interval_seconds": 60,
                           "free_slots_after_run_end_seconds": 60},
    }


def merge_missing(current: dict, required: dict) -> dict:
    """current with every key of required it lacks (nested); the user's own values are kept."""
    merged = dict(current)
    for key, value in required.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_missing(merged[key], value)
        elif key not in merged:
            merged[key] = value
    return merged
