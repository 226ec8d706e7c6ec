"""Alerts from runs: every check evaluation and the run's outcome become signals (firing or not),
which `alerts/service.py` de-duplicates, routes, delivers and records in `analysis.alerts`.

A check can publish per-experiment signals in its `alert_signals` metadata (guardrails, budget burn,
business metrics, SRM); any other check is one platform-wide signal, firing when it fails. A failed
run fires `run_failure.<job>`, resolved by the job's next successful run. Only short, known fields
are forwarded (never a check's sample rows, which may quote telemetry).
"""

from __future__ import annotations

import dagster as dg

from ..alerts.model import PLATFORM, Signal
from ..alerts.service import has_work, raise_alerts


def _metadata_value(metadata, key):
    value = (metadata or {}).get(key)
    return getattr(value, "value", value) if value is not None else None


def check_signals(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[Signal]:
    signals = []
    partition = run.tags.get("dagster/partition")
    for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        ev = entry.dagster_event.event_specific_data
        asset, check = ev.asset_key.to_user_string(), ev.check_name
        published = _metadata_value(ev.metadata, "alert_signals")
        if isinstance(published, list):
            for item in published:
                if not isinstance(item, dict) or "experiment_id" not in item or "symptom" not in item:
                    continue
                details = {k: v for k, v in item.items() if k not in (
                    "experiment_id", "symptom", "firing", "severity", "route")}
                signals.append(Signal(
                    run_id=run.run_id, asset=asset, check_name=check, experiment_id=str(item["experiment_id"]),
                    symptom=str(item["symptom"]), firing=bool(item.get("firing")),
                    severity=str(item.get("severity", ev.severity.value)),
                    route="page" if item.get("route") == "page" else "ticket",
                    partition=ev.partition or partition, details=details))
            continue
        severity = ev.severity.value
        signals.append(Signal(
            run_id=run.run_id, asset=asset, check_name=check, experiment_id=PLATFORM, symptom=f"{asset}.{check}",
            firing=not ev.passed, severity=severity, route="page" if severity == "ERROR" else "ticket",
            partition=ev.partition or partition,
            details={"summary": ev.description or f"check {check} of {asset} failed", "metric": check}
            if not ev.passed else {}))
    return signals


def run_signals(instance: dg.DagsterInstance, run: dg.DagsterRun, failure_message: str | None = None) -> list[Signal]:
    """Signals of a finished run: its checks, and the run itself (failed, or succeeded: resolves)."""
    failed = run.status == dg.DagsterRunStatus.FAILURE
    return [*check_signals(instance, run), Signal(
        run_id=run.run_id, asset=run.job_name, check_name="run_failure", experiment_id=PLATFORM,
        symptom=f"run_failure.{run.job_name}", firing=failed, severity="ERROR", route="page",
        partition=run.tags.get("dagster/partition"),
        details={"summary": (failure_message or "run failed")[:300]} if failed else {})]


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, monitor_all_code_locations=False,
                      default_status=dg.DefaultSensorStatus.RUNNING,
                      description="Alerts from a successful run's checks (guardrails, budget burn, SRM, data "
                                  "gates) and resolves what passes again.")
def check_failure_alerts(context: dg.RunStatusSensorContext):
    raise_alerts(context.log, run_signals(context.instance, context.dagster_run))


@dg.run_failure_sensor(default_status=dg.DefaultSensorStatus.RUNNING,
                       description="Alerts on a failed run (e.g. stopped by a blocking data check) and its checks.")
def run_failure_alerts(context: dg.RunFailureSensorContext):
    message = context.failure_event.message if context.failure_event else None
    raise_alerts(context.log, run_signals(context.instance, context.dagster_run, message))


@dg.sensor(minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Delivers alerts that are still due: spooled while the warehouse was busy, or whose "
                       "target failed on an earlier tick (bounded work per tick).")
def alert_outbox(context: dg.SensorEvaluationContext):
    if not has_work():
        return dg.SkipReason("nothing spooled or due")
    summary = raise_alerts(context.log, [])
    return dg.SkipReason(f"{len(summary.delivered)} delivered, {len(summary.failed)} still failing")
