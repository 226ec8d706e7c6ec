"""Alerts against real HTTP servers on 127.0.0.1: de-duplication before delivery, quiet period,
resolved once, retries, a hanging target, Slack `ok: false`, routing, a busy warehouse, no PII."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import duckdb
import pytest

from mvt_pipeline.alerts.model import Signal
from mvt_pipeline.alerts.policy import LastAlert, plan
from mvt_pipeline.alerts.service import has_work, raise_alerts
from mvt_pipeline.config import AlertSettings, settings
from mvt_pipeline.defs.alert_sensors import check_signals

LOG = logging.getLogger("test_alerts")


class Server:
    """Answers POSTs from a script of (status, body, delay_s); the last entry repeats."""

    def __init__(self):
        self.script = [(200, b'{"ok": true}', 0.0)]
        self.received: list[tuple[str, dict, dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"raw": raw.decode()}
                outer.received.append((self.path, dict(self.headers), body))
                status, answer, delay = outer.script[min(len(outer.received) - 1, len(outer.script) - 1)]
                time.sleep(delay)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def posts(self, path: str) -> list[dict]:
        return [b for p, _h, b in self.received if p == path]


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown()


def _settings(workdir, **alerts):
    defaults = dict(delivery_deadline_s=2.0)
    return dataclasses.replace(settings(), alerts=AlertSettings(**(defaults | alerts)))


def harm(run="r1", firing=True, experiment="checkout_mvt", summary="error_rate 0.6 pp worse", **details):
    return Signal(run_id=run, asset="experiment_decisions", check_name="guardrails", experiment_id=experiment,
                  symptom="guardrail_harm", firing=firing, severity="ERROR", route="page", partition="2026-11-12",
                  details={"cell": "cta_color=green|validation=inline|copy=standard", "metric": "error_rate",
                           "observed": 0.016, "threshold": 0.012, "unit": "pp", "flag": "checkout-validation=inline",
                           "summary": summary, "report": "/data/reports/2026-11-02/checkout_mvt.html",
                           "runbook": "roll back"} | details if firing else {})


def rows(s, where="true"):
    with duckdb.connect(str(s.duckdb_path), read_only=True) as conn:
        return conn.execute(f"select alert_key, kind, status, route, delivered_to, attempts, last_error, message,"
                            f" details from analysis.alerts where {where} order by created_at, alert_key").df()


def test_policy_quiet_period_and_resolution():
    now = dt.datetime(2026, 11, 12, 3)
    q = dt.timedelta(hours=12)
    assert [a.status for a in plan([harm()], {}, q, now=now)] == ["pending"]
    opened = {("checkout_mvt", "guardrail_harm"): LastAlert("firing", now - dt.timedelta(hours=1))}
    assert [a.status for a in plan([harm(run="r2")], opened, q, now=now)] == ["suppressed"]
    stale = {("checkout_mvt", "guardrail_harm"): LastAlert("firing", now - dt.timedelta(hours=13))}
    assert [a.status for a in plan([harm(run="r2")], stale, q, now=now)] == ["pending"]
    resolved = plan([harm(run="r3", firing=False)], opened, q, now=now)
    assert [(a.kind, a.status) for a in resolved] == [("resolved", "pending")]
    closed = {("checkout_mvt", "guardrail_harm"): LastAlert("resolved", now)}
    assert plan([harm(run="r4", firing=False)], closed, q, now=now) == []
    # two signals of one symptom in one batch: the second is a duplicate
    assert [a.status for a in plan([harm(run="a"), harm(run="b")], {}, q, now=now)] == ["pending", "suppressed"]


def test_retry_then_delivered_dedup_and_resolved_once(workdir, server):
    server.script = [(500, b"oops", 0.0), (200, b"{}", 0.0)]
    s = _settings(workdir, webhook_url=f"{server.url}/hook", report_base_url="https://reports.example.com/mvt",
                  dagster_base_url="http://dagster.internal:3000")
    summary = raise_alerts(LOG, [harm()], s)
    assert len(summary.delivered) == 1 and not summary.failed
    hooks = server.posts("/hook")
    assert len(hooks) == 2 and hooks[0] == hooks[1]  # retried after the 500, same body
    text = hooks[-1]["text"]
    for part in ("checkout_mvt", "cta_color=green|validation=inline|copy=standard", "error_rate", "observed 1.6 %",
                 "threshold 1.2 %", "Turn off: checkout-validation=inline", "Runbook:",
                 "https://reports.example.com/mvt/2026-11-02/checkout_mvt.html", "http://dagster.internal:3000/runs/r1"):
        assert part in text, (part, text)
    assert hooks[-1]["alert"]["route"] == "page"
    # the next night's run within the quiet period: recorded as suppressed, not sent
    raise_alerts(LOG, [harm(run="r2")], s)
    assert len(server.posts("/hook")) == 2
    r = rows(s)
    assert list(r["status"]) == ["delivered", "suppressed"] and r["attempts"].iloc[0] == 1
    # the same run processed again (sensor after the command line): nothing new
    raise_alerts(LOG, [harm()], s)
    assert len(rows(s)) == 2
    # the check passes again: one resolved message, then silence
    raise_alerts(LOG, [harm(run="r3", firing=False)], s)
    raise_alerts(LOG, [harm(run="r4", firing=False)], s)
    hooks = server.posts("/hook")
    assert len(hooks) == 3 and hooks[-1]["text"].startswith("[mvt_pipeline] RESOLVED")
    assert list(rows(s)["kind"]) == ["firing", "firing", "resolved"]


def test_a_hanging_target_is_cut_at_the_deadline_and_retried_later(workdir, server):
    server.script = [(200, b"{}", 30.0)]
    s = _settings(workdir, webhook_url=f"{server.url}/hook", delivery_deadline_s=2.0)
    started = time.monotonic()
    summary = raise_alerts(LOG, [harm()], s)
    assert time.monotonic() - started < 8
    assert len(summary.failed) == 1
    r = rows(s)
    assert r["status"].iloc[0] == "failed" and r["last_error"].iloc[0]
    assert has_work(s)  # the outbox sensor will retry it (and only then opens the warehouse)
    # the target recovers: the next tick (no new signal) delivers the stored alert, once
    server.script = [(200, b"{}", 0.0)]
    server.received.clear()
    summary = raise_alerts(LOG, [], s)
    assert len(summary.delivered) == 1 and len(server.posts("/hook")) == 1
    assert rows(s)["status"].tolist() == ["delivered"]
    raise_alerts(LOG, [], s)
    assert len(server.posts("/hook")) == 1
    assert not has_work(s)


def test_a_target_that_keeps_failing_is_given_up_after_five_attempts(workdir, server):
    server.script = [(503, b"down", 0.0)]
    s = _settings(workdir, webhook_url=f"{server.url}/hook", delivery_deadline_s=1.0)
    for _ in range(7):
        raise_alerts(LOG, [harm()] if _ == 0 else [], s)
    r = rows(s)
    assert r["status"].tolist() == ["given_up"] and r["attempts"].tolist() == [5]
    assert not has_work(s)


def test_slack_ok_false_is_a_failure_and_pages_go_to_the_owner_channel(workdir, server):
    (workdir / "registry" / "experiments.yaml").write_text(
        (workdir / "registry" / "experiments.yaml").read_text()
        + "\nowners:\n  team-checkout: {slack_channel: '#checkout-oncall'}\n")
    server.script = [(200, b'{"ok": false, "error": "channel_not_found"}', 0.0)]
    s = _settings(workdir, slack_token="xoxb-secret-token", slack_channel="#default",
                  slack_api_url=f"{server.url}/api/chat.postMessage")
    summary = raise_alerts(LOG, [harm()], s)
    assert len(summary.failed) == 1
    posted = server.received[0]
    assert posted[0] == "/api/chat.postMessage" and posted[1]["Authorization"] == "Bearer xoxb-secret-token"
    assert "checkout-oncall" in json.dumps(posted[2])  # the owner's channel, not the default
    r = rows(s)
    assert r["status"].iloc[0] == "failed" and "channel_not_found" in r["last_error"].iloc[0]
    with duckdb.connect(str(s.duckdb_path), read_only=True) as conn:
        dump = json.dumps(conn.execute("select * from analysis.alerts").df().astype(str).to_dict("records"))
    assert "xoxb-secret-token" not in dump


def test_tickets_go_to_the_ticket_target_and_carry_no_pii(workdir, server):
    s = _settings(workdir, webhook_url=f"{server.url}/page", ticket_webhook_url=f"{server.url}/ticket")
    ticket = Signal(run_id="r1", asset="raw_events", check_name="quarantine_rate", experiment_id="*",
                    symptom="raw_events.quarantine_rate", firing=True, severity="WARN", route="ticket",
                    details={"summary": "line 3: {'email': 'jane.doe@example.com', 'phone': '+1 415 555 0100'}",
                             "sample": "jane.doe@example.com"})
    raise_alerts(LOG, [ticket], s)
    assert server.posts("/page") == [] and len(server.posts("/ticket")) == 1
    sent = json.dumps(server.posts("/ticket")[0])
    assert "jane.doe" not in sent and "555 0100" not in sent and "[redacted]" in sent
    stored = rows(s)
    assert "jane.doe" not in stored["message"].iloc[0] + stored["details"].iloc[0]


def test_a_busy_warehouse_spools_and_records_later(workdir, server):
    s = _settings(workdir, webhook_url=f"{server.url}/hook")
    s.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c",
                               f"import duckdb, time; c = duckdb.connect({str(s.duckdb_path)!r}); print('held', flush=True);"
                               " time.sleep(6)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        summary = raise_alerts(LOG, [harm()], s)
        assert summary.spooled == 1 and server.posts("/hook") == []
        assert list((s.data_dir / "alerts" / "outbox").glob("*.json"))
    finally:
        holder.wait(timeout=30)
    summary = raise_alerts(LOG, [], s)
    assert len(summary.delivered) == 1 and len(server.posts("/hook")) == 1
    assert rows(s)["status"].tolist() == ["delivered"]
    assert not list((s.data_dir / "alerts" / "outbox").glob("*.json"))


def test_checks_become_signals_with_published_per_experiment_signals(workdir):
    @dg.asset(check_specs=[dg.AssetCheckSpec("plain", asset="thing"), dg.AssetCheckSpec("guardrails", asset="thing")])
    def thing():
        yield dg.MaterializeResult()
        yield dg.AssetCheckResult(check_name="plain", passed=False, severity=dg.AssetCheckSeverity.WARN,
                                  description="3 lines quarantined", metadata={"sample": "x@y.com"})
        yield dg.AssetCheckResult(check_name="guardrails", passed=False, severity=dg.AssetCheckSeverity.ERROR,
                                  metadata={"alert_signals": dg.MetadataValue.json([
                                      {"experiment_id": "e1", "symptom": "guardrail_harm", "firing": True,
                                       "severity": "ERROR", "route": "page", "cell": "a=1"},
                                      {"experiment_id": "e2", "symptom": "guardrail_harm", "firing": False,
                                       "severity": "ERROR", "route": "page"}])})

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([thing], instance=instance)
    signals = check_signals(instance, instance.get_run_by_id(result.run_id))
    by = {(x.experiment_id, x.symptom): x for x in signals}
    assert by[("*", "thing.plain")].firing and by[("*", "thing.plain")].route == "ticket"
    assert "sample" not in by[("*", "thing.plain")].details
    assert by[("e1", "guardrail_harm")].firing and by[("e1", "guardrail_harm")].details["cell"] == "a=1"
    assert not by[("e2", "guardrail_harm")].firing
