"""Run nights through the Dagster instance: the same `nightly` job the schedule launches, one partition
per night, so the runs show in the UI and their failed checks raise alerts even without a daemon.

Used by the `mvt` command line and `make demo`; the tests drive the same functions.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .config import export_dagster_home, export_dbt_environment, quiet_third_party_telemetry, settings

def dagster_yaml_settings() -> dict:
    """The instance settings the project needs (run_guard.instance_settings), from the run timeout."""
    from .run_guard import instance_settings

    return instance_settings(settings().runs.timeout_s)


class NightError(ValueError):
    """A night that cannot be run as asked (the message says what to change)."""


@dataclass
class NightResult:
    night: str
    job: str
    run_id: str
    success: bool
    seconds: float
    failed_checks: list[str] = field(default_factory=list)
    alerts: int = 0
    error: str | None = None
    result: object = field(default=None, repr=False)  # Dagster's ExecuteInProcessResult, for tests


def ensure_dagster_home() -> Path:
    """DAGSTER_HOME (default `.dagster_home` in the project) with telemetry off, one warehouse writer
    and one queued run at a time, and run monitoring (docs/operations.md). An existing dagster.yaml
    gains the keys it lacks; the user's own keys and values stay (written to a temp file, renamed)."""
    import yaml

    from .run_guard import merge_missing

    home = settings().dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    current = (yaml.safe_load(config.read_text()) or {}) if config.exists() else {}
    if not isinstance(current, dict):
        raise NightError(f"{config} is not a YAML mapping: fix or remove it")
    required = dagster_yaml_settings()
    if "run_queue" in current or "run_coordinator" in current:
        required["concurrency"].pop("runs")  # the user's run queue settings rule (Dagster rejects both)
    merged = merge_missing(current, required)
    if merged != current or not config.exists():
        tmp = home / f".dagster.yaml.{os.getpid()}.tmp"
        tmp.write_text(yaml.safe_dump(merged, sort_keys=False))
        tmp.replace(config)
    export_dagster_home(home)
    return home


def prepare_dbt_manifest() -> Path:
    """dbt's manifest, which `@dbt_assets` reads when the code location loads."""
    from dagster_dbt import DbtProject

    from .config import DBT_PROJECT_DIR
    from .defs.resources import VenvDbtPreparer

    project = DbtProject(project_dir=DBT_PROJECT_DIR)
    VenvDbtPreparer().prepare(project)
    return project.manifest_path


def check_night(night: str | dt.date) -> str:
    """The night as a partition key, or a NightError that says which setting or date to change."""
    try:
        day = night if isinstance(night, dt.date) else dt.date.fromisoformat(str(night))
    except ValueError:
        raise NightError(f"{night!r} is not a date (YYYY-MM-DD)") from None
    start = settings().partitions_start
    if day < start:
        raise NightError(f"night {day} is before the first partition {start}: set MVT_PARTITIONS_START={day} "
                         "(or earlier) and run again")
    last_complete = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)
    if day > last_complete:
        raise NightError(f"night {day} is not over yet: the last complete night is {last_complete} (UTC)")
    return day.isoformat()


def nights_between(start: str, end: str) -> list[str]:
    first, last = check_night(start), check_night(end)
    if last < first:
        raise NightError(f"--end {last} is before --start {first}")
    d0 = dt.date.fromisoformat(first)
    return [(d0 + dt.timedelta(days=i)).isoformat() for i in range((dt.date.fromisoformat(last) - d0).days + 1)]


def _alert_log(quiet: bool) -> logging.Logger:
    """Alert texts on the console unless quiet (they are in analysis.alerts and the UI); delivery
    errors always."""
    log = logging.getLogger("mvt_pipeline.alerts")
    if not log.handlers:
        log.addHandler(logging.StreamHandler())
        log.propagate = False
    log.setLevel(logging.ERROR if quiet else logging.WARNING)
    return log


def _guard_log() -> logging.Logger:
    """What a run waits for (the writer lock, a reader of the warehouse) on the console: the run's
    own console logger shows warnings only."""
    log = logging.getLogger("mvt_pipeline.run_guard")
    if not log.handlers:
        log.addHandler(logging.StreamHandler())
        log.propagate = False
    log.setLevel(logging.INFO)
    return log


def _failure_message(result) -> str:
    """The first failed step's message; for a run that failed before its steps (the warehouse stayed
    busy, a signal while waiting), the run guard's own message instead of Dagster's generic one."""
    from .run_guard import RunInterrupted, WarehouseBusy

    guard = {WarehouseBusy.__name__, RunInterrupted.__name__}
    failures = [e for e in result.all_events if e.is_step_failure or e.event_type_value == "RUN_FAILURE"]
    for event in result.all_events:
        error = getattr(event.event_specific_data, "error", None)
        while error is not None:
            if error.cls_name in guard:
                return error.message.strip().removeprefix(f"mvt_pipeline.run_guard.{error.cls_name}: ")
            error = error.cause
    steps = [e for e in failures if e.is_step_failure]
    return (steps or failures)[0].message if failures else "run failed"


def _process_tags() -> dict[str, str]:
    """The run's process, so a later run can tell it died even before it took the writer lock."""
    from .run_guard import TAG_HOST, TAG_PID

    return {TAG_PID: str(os.getpid()), TAG_HOST: socket.gethostname()}


def run_job(job_name: str, night: str, *, force: bool = False, instance=None, quiet: bool = True,
            trigger: str = "cli") -> NightResult:
    """One run of a job of the code location for one night, then its alerts (failed checks, failure)."""
    import dagster as dg

    from .definitions import build_defs
    from .defs.alert_sensors import raise_alerts, run_signals

    quiet_third_party_telemetry()
    export_dbt_environment()
    instance = instance or dg.DagsterInstance.get()
    job = build_defs().resolve_job_def(job_name)
    run_config: dict = {}
    if quiet:  # warnings and errors only on the console: the full event log is in the UI
        run_config["loggers"] = {"console": {"config": {"log_level": "WARNING"}}}
    if force:
        run_config["ops"] = {"raw_events": {"config": {"force": True}}}
    _guard_log()
    started = time.perf_counter()
    result = job.execute_in_process(run_config=run_config, instance=instance, partition_key=night,
                                    tags={"mvt/trigger": trigger, **_process_tags()}, raise_on_error=False)
    failed = [f"{c.asset_key.to_user_string()}.{c.check_name} ({c.severity.value})"
              for c in result.get_asset_check_evaluations() if not c.passed]
    error = None if result.success else _failure_message(result)
    run = instance.get_run_by_id(result.run_id)
    summary = raise_alerts(_alert_log(quiet), run_signals(instance, run, error))
    alerts = len([a for a in summary.recorded if a.status != "suppressed"])
    return NightResult(night=night, job=job_name, run_id=result.run_id, success=result.success,
                       seconds=time.perf_counter() - started, failed_checks=failed, alerts=alerts, error=error,
                       result=result)


def run_nights(nights: list[str], *, force: bool = False, instance=None,
               progress: Callable[[str], None] = print) -> list[NightResult]:
    """Nights in order (each one sees only the data up to its day); a failed night is reported and
    the next one still runs."""
    results = []
    for i, night in enumerate(nights, 1):
        progress(f">> [{i}/{len(nights)}] night {night}")
        res = run_job("nightly", night, force=force, instance=instance)
        for check in res.failed_checks:
            progress(f"   check failed: {check}")
        status = "ok" if res.success else f"FAILED ({(res.error or '').splitlines()[0][:200]})"
        progress(f"   {status} in {res.seconds:.0f} s, run {res.run_id}" + (f", {res.alerts} alerts" if res.alerts else ""))
        results.append(res)
    return results
