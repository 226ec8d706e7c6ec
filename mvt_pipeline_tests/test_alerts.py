"""Failed checks become log lines, `analysis.alerts` rows and webhook/Slack posts (to a local server)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import dagster as dg
import duckdb
import pytest

from mvt_pipeline.alerts import Alert, AlertTargets, deliver, store_alerts
from mvt_pipeline.defs.alert_sensors import failed_check_alerts, raise_alerts


class _Recorder(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Recorder.received.append((self.path, self.headers.get("Authorization"), json.loads(body)))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    _Recorder.received = []
    server = HTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _alert(**kw):
    base = dict(run_id="r1", asset="factorial_effects", check_name="guardrails", severity="ERROR",
                message="error_rate worse for validation=inline")
    return Alert(**(base | kw))


def test_webhook_and_slack_receive_the_alert(http_server):
    targets = AlertTargets(webhook_url=f"{http_server}/hook", slack_token="xoxb-test", slack_channel="#exp",
                           slack_api_url=f"{http_server}/slack")
    delivered, errors = deliver([_alert()], targets)
    assert errors == []
    assert delivered == {"r1:factorial_effects:guardrails": "log,webhook,slack"}
    paths = {p: (auth, body) for p, auth, body in _Recorder.received}
    assert "guardrails" in paths["/hook"][1]["text"]
    assert paths["/slack"][0] == "Bearer xoxb-test" and paths["/slack"][1]["channel"] == "#exp"


def test_unreachable_target_is_reported_not_raised():
    delivered, errors = deliver([_alert()], AlertTargets(webhook_url="http://127.0.0.1:9/none"), timeout=1)
    assert delivered["r1:factorial_effects:guardrails"] == "log"
    assert errors and errors[0].startswith("webhook:")


def test_alert_rows_are_stored_once(tmp_path):
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    assert store_alerts(conn, [_alert(), _alert(check_name="srm_check")], {}) == 2
    assert store_alerts(conn, [_alert()], {}) == 0
    assert conn.execute("select count(*) from analysis.alerts").fetchone()[0] == 2


def test_failed_checks_of_a_run_become_alerts(workdir):
    @dg.asset(check_specs=[dg.AssetCheckSpec("always_fails", asset="thing")])
    def thing():
        yield dg.MaterializeResult()
        yield dg.AssetCheckResult(check_name="always_fails", passed=False, severity=dg.AssetCheckSeverity.WARN,
                                  metadata={"rate": 0.5})

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([thing], instance=instance)
    run = instance.get_run_by_id(result.run_id)
    alerts = failed_check_alerts(instance, run)
    assert [(a.asset, a.check_name, a.severity) for a in alerts] == [("thing", "always_fails", "WARN")]
    context = dg.build_run_status_sensor_context(
        sensor_name="check_failure_alerts", dagster_instance=instance, dagster_run=run,
        dagster_event=result.get_run_success_event())
    raise_alerts(context.log, alerts)
    with duckdb.connect(str(workdir / "warehouse" / "mvt.duckdb")) as conn:
        rows = conn.execute("select asset, check_name, delivered_to from analysis.alerts").fetchall()
    assert rows == [("thing", "always_fails", "log")]
