"""Run nights through the Dagster instance: the same `nightly` job the schedule launches, one partition
per night, so the runs show in the UI and their failed checks raise alerts even without a daemon.

Used by the `mvt` command line and `make demo`; the tests drive the same functions.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .config import export_dagster_home, export_dbt_environment, quiet_third_party_telemetry, settings

DAGSTER_YAML = "telemetry:\n  enabled: false\nconcurrency:\n  pools:\n    default_limit: 1\n"


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
    """DAGSTER_HOME (default `.dagster_home` in the project) with telemetry off and one warehouse
    writer at a time; an existing dagster.yaml is left as it is."""
    home = settings().dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        tmp = home / ".dagster.yaml.tmp"
        tmp.write_text(DAGSTER_YAML)
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
    started = time.perf_counter()
    result = job.execute_in_process(run_config=run_config, instance=instance, partition_key=night,
                                    tags={"mvt/trigger": trigger}, raise_on_error=False)
    failed = [f"{c.asset_key.to_user_string()}.{c.check_name} ({c.severity.value})"
              for c in result.get_asset_check_evaluations() if not c.passed]
    error = None
    if not result.success:
        failures = [e for e in result.all_events if e.is_step_failure or e.event_type_value == "RUN_FAILURE"]
        error = failures[0].message if failures else "run failed"
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
