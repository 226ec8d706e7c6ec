"""Alert when a run finishes with failed checks (data gates, SRM, guardrails) or fails outright.

Each failure gives a log line, an `analysis.alerts` row and, when configured, a webhook/Slack message.
The warehouse write uses a short connection with a few retries, since a run may hold DuckDB's lock.
"""

from __future__ import annotations

import time

import dagster as dg
import duckdb

from ..alerts import Alert, AlertTargets, deliver, store_alerts
from ..config import settings


def _metadata_summary(metadata) -> dict:
    out = {}
    for key, value in (metadata or {}).items():
        raw = getattr(value, "value", value)
        out[key] = raw if isinstance(raw, (int, float, str, bool, list, dict, type(None))) else str(raw)
    return out


def failed_check_alerts(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[Alert]:
    alerts = []
    for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = entry.dagster_event.event_specific_data
        if evaluation.passed:
            continue
        details = _metadata_summary(evaluation.metadata)
        alerts.append(Alert(
            run_id=run.run_id, asset=evaluation.asset_key.to_user_string(), check_name=evaluation.check_name,
            severity=evaluation.severity.value, partition=evaluation.partition or run.tags.get("dagster/partition"),
            message=evaluation.description or ", ".join(f"{k}={v}" for k, v in list(details.items())[:4]),
            details=details,
        ))
    return alerts


def run_alerts(instance: dg.DagsterInstance, run: dg.DagsterRun, failure_message: str | None = None) -> list[Alert]:
    """The alerts of a finished run: its failed checks, and the run itself when it failed."""
    alerts = failed_check_alerts(instance, run)
    if run.status == dg.DagsterRunStatus.FAILURE:
        alerts.append(Alert(run_id=run.run_id, asset=run.job_name, check_name="run_failure", severity="ERROR",
                            partition=run.tags.get("dagster/partition"),
                            message=(failure_message or "run failed")[:500]))
    return alerts


def raise_alerts(log, alerts: list[Alert]) -> int:
    """Log, deliver and store alerts; returns how many were new (a run already alerted on is not
    alerted twice, whether the sensor or the command line saw it first)."""
    if not alerts:
        return 0
    path = settings().duckdb_path
    path.parent.mkdir(parents=True, exist_ok=True)
    for alert in alerts:
        log.warning(alert.text())
    delivered, errors = deliver(alerts, AlertTargets.from_env())
    for err in errors:
        log.error(f"alert delivery failed: {err}")
    for attempt in range(5):
        try:
            with duckdb.connect(str(path)) as conn:
                return store_alerts(conn, alerts, delivered)
        except duckdb.IOException as exc:  # the warehouse is locked by a running job
            if attempt == 4:
                log.error(f"could not write analysis.alerts (warehouse busy): {exc}")
            time.sleep(2)
    return 0


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, monitor_all_code_locations=False,
                      default_status=dg.DefaultSensorStatus.RUNNING,
                      description="Alerts on the failed (non-blocking) checks of a successful run: SRM, "
                                  "guardrails, quarantine rate, stale flags.")
def check_failure_alerts(context: dg.RunStatusSensorContext):
    raise_alerts(context.log, failed_check_alerts(context.instance, context.dagster_run))


@dg.run_failure_sensor(default_status=dg.DefaultSensorStatus.RUNNING,
                       description="Alerts on a failed run (e.g. stopped by a blocking data check) and its "
                                   "failed checks.")
def run_failure_alerts(context: dg.RunFailureSensorContext):
    message = context.failure_event.message if context.failure_event else None
    raise_alerts(context.log, run_alerts(context.instance, context.dagster_run, message))
