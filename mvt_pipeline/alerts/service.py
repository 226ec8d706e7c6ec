"""Raise alerts: record them (de-duplicated), deliver them within a time budget, record the outcome.

Why this shape: a sensor tick has 60 s and the warehouse may be held by a run. Recording uses short
connections (spooled when busy, replayed later); delivery happens with no connection open, one
deadline per delivery and a budget per call, so a slow or hanging target delays only itself, and
what was not delivered stays due in `analysis.alerts` for the next call.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field

import duckdb

from ..config import Settings, settings as load_settings
from ..registry import RegistryError, load_registry
from . import outbox
from .messages import compose
from .model import Alert, Signal, utc_now
from .policy import plan
from .transport import post_slack, post_webhook

TICK_BUDGET_S = 40.0  # under Dagster's 60 s sensor timeout, with room to record the outcomes
MAX_DELIVERIES_PER_CALL = 20
RETRY_MARKER = ".due"  # present while alerts in analysis.alerts still wait for a delivery


@dataclass
class Summary:
    recorded: list[Alert] = field(default_factory=list)
    delivered: list[Alert] = field(default_factory=list)
    failed: list[Alert] = field(default_factory=list)
    spooled: int = 0


def _routing(s: Settings) -> tuple[dict[str, str], dict[str, str]]:
    """({experiment: owner}, {owner: Slack channel}) from the registry (empty when it does not load)."""
    try:
        registry = load_registry(s.registry_dir)
    except (RegistryError, OSError):
        return {}, {}
    return ({e.id: e.owner for e in registry.experiments},
            {o: r.slack_channel for o, r in registry.owners.items() if r.slack_channel})


def _connect(s: Settings, attempts: int = 3):
    s.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(attempts):
        try:
            return duckdb.connect(str(s.duckdb_path), config=s.duckdb_config())
        except (duckdb.IOException, duckdb.ConnectionException):  # another process (or connection) holds it
            if attempt == attempts - 1:
                return None
            time.sleep(1.0)
    return None


def _targets(alert: Alert, s: Settings, channels: dict[str, str]) -> list[tuple[str, object]]:
    a = s.alerts
    deadline = a.delivery_deadline_s
    targets = []
    if alert.route == "page":
        webhook, channel = a.webhook_url, channels.get(alert.owner or "") or a.slack_channel
        webhook_name = "webhook"
    else:
        webhook, channel, webhook_name = a.ticket_webhook_url, a.slack_ticket_channel, "ticket_webhook"
    text = alert.message
    if webhook:
        payload = {"text": text, "alert": {k: getattr(alert, k) for k in (
            "experiment_id", "symptom", "kind", "severity", "route", "owner", "asset", "check_name", "partition",
            "run_id")} | {"details": alert.details}}
        targets.append((webhook_name, lambda: post_webhook(webhook, payload, deadline_s=deadline)))
    if a.slack_token and channel:
        targets.append((f"slack:{channel}", lambda: post_slack(a.slack_token, channel, text,
                                                              base_url=_slack_base(a.slack_api_url),
                                                              deadline_s=deadline)))
    return targets


def _slack_base(api_url: str) -> str:
    """slack_sdk wants the API root (…/api/); the setting may name chat.postMessage itself."""
    root = api_url.split("chat.postMessage")[0]
    return root if root.endswith("/") else root + "/"


def deliver(alert: Alert, s: Settings, channels: dict[str, str]) -> Alert:
    """Send to every target not yet reached; the alert's status says what happened."""
    done = set(filter(None, alert.delivered_to.split(",")))
    targets = [(n, send) for n, send in _targets(alert, s, channels) if n not in done]
    if not targets and not done:
        alert.status = "no_target"
        return alert
    errors = []
    for name, send in targets:
        outcome = send()
        if outcome.ok:
            done.add(name)
        else:
            errors.append(f"{name}: {outcome.error}")
    alert.attempts += 1
    alert.delivered_to = ",".join(sorted(done))
    alert.last_error = "; ".join(errors)[:500] or None
    alert.status = ("given_up" if alert.attempts >= outbox.MAX_ATTEMPTS else "failed") if errors else "delivered"
    if not errors:
        alert.delivered_at = utc_now()
    return alert


def _record(conn, signals: list[Signal], s: Settings, owners: dict[str, str], log) -> list[Alert]:
    alerts = plan(signals, outbox.alert_state(conn), dt.timedelta(hours=s.alerts.quiet_period_hours), owners)
    for a in alerts:
        a.message = compose(a, s.alerts.report_base_url, s.alerts.dagster_base_url)
    new = outbox.insert_alerts(conn, alerts)
    for a in new:
        if a.status == "suppressed":
            log.info(f"alert suppressed (quiet period): {a.experiment_id} {a.symptom}")
        else:
            log.warning(a.message)
    return new


def _spool_dir(s: Settings):
    return s.data_dir / "alerts" / "outbox"


def has_work(s: Settings | None = None) -> bool:
    """Whether anything is spooled or still due, without opening the warehouse (the outbox sensor
    must not take DuckDB's single write lock every minute for nothing: a run may need it)."""
    spool_dir = _spool_dir(s or load_settings())
    return spool_dir.is_dir() and (any(spool_dir.glob("*.json")) or (spool_dir / RETRY_MARKER).exists())


def _mark_retry(spool_dir, due_left: bool) -> None:
    marker = spool_dir / RETRY_MARKER
    if due_left:
        spool_dir.mkdir(parents=True, exist_ok=True)
        marker.touch()
    else:
        marker.unlink(missing_ok=True)


def raise_alerts(log, signals: list[Signal], s: Settings | None = None, budget_s: float = TICK_BUDGET_S) -> Summary:
    """Record tonight's signals as alerts, deliver what is due (new and earlier undelivered ones),
    record the outcomes. Never raises for a target or a busy warehouse."""
    s = s or load_settings()
    spool_dir = _spool_dir(s)
    summary = Summary()
    owners, channels = _routing(s)
    conn = _connect(s)
    if conn is None:
        if signals:
            outbox.spool(spool_dir, "signals", signals)
            summary.spooled = len(signals)
            log.warning(f"warehouse busy: {len(signals)} alert signals spooled to {spool_dir}; "
                        "they are recorded and delivered on the next tick")
        return summary
    try:
        for path, kind, items in outbox.spooled(spool_dir):
            if kind == "signals":
                summary.recorded += _record(conn, items, s, owners, log)
            else:
                for alert in items:
                    outbox.record_outcome(conn, alert)
            path.unlink()
        summary.recorded += _record(conn, signals, s, owners, log)
        due = outbox.due_alerts(conn, MAX_DELIVERIES_PER_CALL)
    finally:
        conn.close()
    start, done = time.monotonic(), []
    for alert in due:
        if time.monotonic() - start > budget_s - s.alerts.delivery_deadline_s:
            log.info(f"{len(due) - len(done)} alerts left for the next tick (time budget)")
            break
        done.append(deliver(alert, s, channels))
        if alert.status in ("failed", "given_up"):
            log.error(f"alert delivery failed ({alert.experiment_id} {alert.symptom}, attempt {alert.attempts}"
                      f"{', giving up' if alert.status == 'given_up' else ''}): {alert.last_error}")
    summary.delivered = [a for a in done if a.status == "delivered"]
    summary.failed = [a for a in done if a.status in ("failed", "given_up")]
    _mark_retry(spool_dir, any(a.status == "failed" for a in done) or len(done) < len(due)
                or len(due) == MAX_DELIVERIES_PER_CALL)
    if done:
        conn = _connect(s)
        if conn is None:
            outbox.spool(spool_dir, "outcomes", done)
            summary.spooled += len(done)
        else:
            try:
                for alert in done:
                    outbox.record_outcome(conn, alert)
            finally:
                conn.close()
    return summary
