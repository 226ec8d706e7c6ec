"""Alert transport against real HTTP servers on 127.0.0.1: retries, no-retry cases, one overall
deadline (hanging and dripping targets), secrets kept out of errors and logs, Slack semantics."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs

import pytest

from mvt_pipeline.alerts.transport import Outcome, post_slack, post_webhook

DEADLINE = 3.0
SLACK_MARGIN = 1.5  # a call must return within deadline + this
FAST = {"deadline_s": DEADLINE, "backoff_s": 0.05}
TOKEN = "xoxb-0000-SECRETTOKEN42"
PAYLOAD = {"text": "guardrail breached", "alert": {"check": "srm", "severity": "high", "p": 0.0001}}


# ---------------------------------------------------------------------------------------------
# a small real HTTP server whose answers each test scripts


@dataclass
class Seen:
    path: str
    headers: Message
    body: bytes

    def form(self) -> dict:
        """The request body as a dict, whether JSON or form-encoded."""
        if "json" in (self.headers.get("Content-Type") or ""):
            return json.loads(self.body)
        return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}


@dataclass
class Stub:
    respond: Callable[[BaseHTTPRequestHandler, int], None]
    release: threading.Event
    port: int = 0
    requests: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # do not wait for a handler that is still hanging at teardown

    def handle_error(self, request, client_address):  # the client hanging up is expected here
        pass


class _Handler(BaseHTTPRequestHandler):
    stub: Stub

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.stub.lock:
            n = len(self.stub.requests)
            self.stub.requests.append(Seen(self.path, self.headers, body))
        try:
            self.stub.respond(self, n)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, format, *args):  # noqa: A002
        pass


def reply(h: BaseHTTPRequestHandler, status: int, body: dict | bytes = b"", headers: dict | None = None) -> None:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    h.send_response(status)
    h.send_header("Content-Type", "application/json" if isinstance(body, dict) else "text/plain")
    h.send_header("Content-Length", str(len(data)))
    for key, value in (headers or {}).items():
        h.send_header(key, value)
    h.end_headers()
    h.wfile.write(data)


@pytest.fixture
def serve():
    """serve(respond) starts a server on a free port; respond(handler, request_index) answers."""
    release = threading.Event()
    running: list[tuple[_Server, threading.Thread]] = []

    def start(respond: Callable[[BaseHTTPRequestHandler, int], None]) -> Stub:
        stub = Stub(respond, release)
        server = _Server(("127.0.0.1", 0), type("Handler", (_Handler,), {"stub": stub}))
        stub.port = server.server_address[1]
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        running.append((server, thread))
        return stub

    yield start
    release.set()  # let hanging / dripping handlers finish
    for server, thread in running:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """A proxy from the environment must not intercept the 127.0.0.1 servers."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(call: Callable[[], Outcome]) -> tuple[Outcome, float]:
    t0 = time.monotonic()
    outcome = call()
    return outcome, time.monotonic() - t0


def hang(h: BaseHTTPRequestHandler, n: int) -> None:
    """Answer nothing for 30 s (cut short at teardown)."""
    type(h).stub.release.wait(30)


def slack_server(serve, *answers: tuple[int, dict, dict]) -> Stub:
    """A chat.postMessage stand-in: checks path and bearer token, then plays `answers` in order."""

    def respond(h: BaseHTTPRequestHandler, n: int) -> None:
        if h.path != "/api/chat.postMessage" or h.headers.get("Authorization") != f"Bearer {TOKEN}":
            reply(h, 200, {"ok": False, "error": "not_authed"})
            return
        status, body, headers = answers[min(n, len(answers) - 1)]
        reply(h, status, body, headers)

    return serve(respond)


OK_BODY = {"ok": True, "channel": "C123", "ts": "1700000000.000100", "message": {"text": "x"}}


# ---------------------------------------------------------------------------------------------
# webhook


def test_webhook_500_then_200_is_retried_with_the_same_body(serve):
    stub = serve(lambda h, n: reply(h, 500 if n == 0 else 200, b"ok"))
    outcome = post_webhook(stub.url + "/hook", PAYLOAD, **FAST)
    assert outcome == Outcome("webhook", True, 2, None, outcome.elapsed_s)
    assert len(stub.requests) == 2
    assert stub.requests[0].body == stub.requests[1].body
    assert json.loads(stub.requests[0].body) == PAYLOAD
    assert stub.requests[0].headers.get("Content-Type") == "application/json"


def test_webhook_always_500_gives_up_after_all_retries(serve):
    stub = serve(lambda h, n: reply(h, 500, b"down"))
    outcome = post_webhook(stub.url, PAYLOAD, retries=2, **FAST)
    assert not outcome.ok
    assert outcome.attempts == 3 == len(stub.requests)
    assert "500" in outcome.error


def test_webhook_404_is_not_retried(serve):
    stub = serve(lambda h, n: reply(h, 404, b"no such hook"))
    outcome = post_webhook(stub.url + "/wrong", PAYLOAD, **FAST)
    assert not outcome.ok
    assert outcome.attempts == 1 == len(stub.requests)
    assert "404" in outcome.error


def test_webhook_429_waits_for_retry_after(serve):
    stub = serve(lambda h, n: reply(h, 429, b"slow down", {"Retry-After": "1"}) if n == 0 else reply(h, 204))
    outcome, took = timed(lambda: post_webhook(stub.url, PAYLOAD, **FAST))
    assert outcome.ok and outcome.attempts == 2
    assert took >= 1.0  # backoff alone would have retried after ~0.05 s


def test_webhook_redirect_is_not_followed(serve):
    stub = serve(lambda h, n: reply(h, 302, b"", {"Location": "/elsewhere"}))
    outcome = post_webhook(stub.url, PAYLOAD, **FAST)
    assert not outcome.ok and outcome.attempts == 1 and "302" in outcome.error
    assert len(stub.requests) == 1  # no GET to /elsewhere


def test_webhook_that_never_answers_is_abandoned_at_the_deadline(serve):
    stub = serve(hang)
    outcome, took = timed(lambda: post_webhook(stub.url, PAYLOAD, **FAST))
    assert not outcome.ok and outcome.error
    assert took < DEADLINE + SLACK_MARGIN
    assert outcome.attempts == 1


def test_webhook_hang_with_short_attempt_timeout_retries_within_the_deadline(serve):
    stub = serve(hang)
    outcome, took = timed(lambda: post_webhook(stub.url, PAYLOAD, attempt_timeout_s=1.0, **FAST))
    assert not outcome.ok
    assert outcome.attempts >= 2 and len(stub.requests) == outcome.attempts
    assert took < DEADLINE + SLACK_MARGIN


def test_webhook_dripping_body_is_abandoned_at_the_deadline(serve):
    def drip(h: BaseHTTPRequestHandler, n: int) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", "100")
        h.end_headers()
        h.wfile.flush()
        for _ in range(100):
            if type(h).stub.release.wait(2):
                return
            h.wfile.write(b" ")
            h.wfile.flush()

    stub = serve(drip)
    outcome, took = timed(lambda: post_webhook(stub.url, PAYLOAD, **FAST))
    assert not outcome.ok and outcome.error
    assert took < DEADLINE + SLACK_MARGIN


def test_answer_after_the_deadline_is_not_delivered_and_nothing_surfaces_later(serve, monkeypatch):
    crashed: list = []
    monkeypatch.setattr(threading, "excepthook", crashed.append)

    def late(h: BaseHTTPRequestHandler, n: int) -> None:  # 200 at once, then a byte every 0.4 s
        h.send_response(200)
        h.send_header("Content-Length", "5")
        h.end_headers()
        for byte in b"ok!!!":
            h.wfile.write(bytes([byte]))
            h.wfile.flush()
            time.sleep(0.4)  # each read beats the socket timeout; the body ends after the deadline

    stub = serve(late)
    outcome = post_webhook(stub.url, PAYLOAD, deadline_s=1.0, retries=0)
    assert not outcome.ok and outcome.attempts == 1 and outcome.elapsed_s < 1.5
    time.sleep(1.2)  # the answer completes now, in a worker already given up
    assert not outcome.ok
    assert crashed == []  # the abandoned worker thread raised nothing


def test_connection_refused_is_an_outcome_not_an_exception(closed_port):
    outcome = post_webhook(f"http://127.0.0.1:{closed_port}/hook", PAYLOAD, retries=2, **FAST)
    assert not outcome.ok
    assert outcome.error and "refused" in outcome.error.lower()
    assert outcome.attempts == 3  # connection errors are retried


@pytest.mark.parametrize("server", ["http-500", "refused"])
def test_secret_parts_of_the_url_never_appear_in_errors_or_logs(serve, closed_port, caplog, server):
    caplog.set_level(logging.DEBUG)
    port = serve(lambda h, n: reply(h, 500, b"")).port if server == "http-500" else closed_port
    url = f"http://127.0.0.1:{port}/services/T000/B000/SECRETxyz?token=abc"
    outcome = post_webhook(url, PAYLOAD, retries=1, **FAST)
    assert not outcome.ok and outcome.error
    for secret in ("SECRETxyz", "abc", "/services/"):
        assert secret not in outcome.error
        assert secret not in caplog.text
    assert f"http://127.0.0.1:{port}" in outcome.error


def test_bad_inputs_never_raise(serve):
    for url in ("file:///etc/passwd", "not a url", "http://", ""):
        outcome = post_webhook(url, PAYLOAD, **FAST)
        assert not outcome.ok and outcome.attempts == 0 and outcome.error
    stub = serve(lambda h, n: reply(h, 200))
    outcome = post_webhook(stub.url, {"at": datetime(2024, 1, 2, tzinfo=timezone.utc)}, **FAST)
    assert outcome.ok  # a value JSON cannot encode is sent as text, not dropped with the alert
    assert json.loads(stub.requests[0].body) == {"at": "2024-01-02 00:00:00+00:00"}


# ---------------------------------------------------------------------------------------------
# Slack


def test_slack_ok_false_is_a_failure_naming_the_slack_error(serve, caplog):
    caplog.set_level(logging.DEBUG)
    stub = slack_server(serve, (200, {"ok": False, "error": "channel_not_found"}, {}))
    outcome = post_slack(TOKEN, "#nope", "hello", base_url=stub.url + "/api/", deadline_s=DEADLINE)
    assert outcome.target == "slack:#nope"
    assert not outcome.ok and outcome.attempts == 1
    assert "channel_not_found" in outcome.error  # not "not_authed": path and bearer token were right
    assert TOKEN not in outcome.error and "SECRETTOKEN" not in caplog.text


def test_slack_429_is_retried_after_retry_after(serve):
    stub = slack_server(serve, (429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "1"}), (200, OK_BODY, {}))
    outcome, took = timed(lambda: post_slack(TOKEN, "#alerts", "hello", base_url=stub.url + "/api",
                                             deadline_s=DEADLINE))
    assert outcome.ok and outcome.attempts == 2 and outcome.error is None
    assert len(stub.requests) == 2
    assert took >= 1.0


def test_slack_ok_posts_channel_text_and_blocks(serve):
    stub = slack_server(serve, (200, OK_BODY, {}))
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*SRM* on exp_1"}}]
    outcome = post_slack(TOKEN, "#alerts", "SRM on exp_1", blocks=blocks, base_url=stub.url + "/api/",
                         deadline_s=DEADLINE)
    assert outcome == Outcome("slack:#alerts", True, 1, None, outcome.elapsed_s)
    (seen,) = stub.requests
    assert seen.path == "/api/chat.postMessage"
    assert seen.headers.get("Authorization") == f"Bearer {TOKEN}"
    form = seen.form()
    assert form["channel"] == "#alerts" and form["text"] == "SRM on exp_1"
    assert form["blocks"] == blocks


def test_slack_accepts_the_full_method_url_as_base_url(serve):
    stub = slack_server(serve, (200, OK_BODY, {}))
    outcome = post_slack(TOKEN, "#alerts", "hi", base_url=stub.url + "/api/chat.postMessage", deadline_s=DEADLINE)
    assert outcome.ok and stub.requests[0].path == "/api/chat.postMessage"


def test_slack_that_hangs_is_abandoned_at_the_deadline(serve):
    stub = serve(hang)
    outcome, took = timed(lambda: post_slack(TOKEN, "#alerts", "hello", base_url=stub.url + "/api/",
                                             deadline_s=DEADLINE))
    assert not outcome.ok and outcome.error and TOKEN not in outcome.error
    assert took < DEADLINE + SLACK_MARGIN


def test_slack_connection_refused_is_retried_and_reported(closed_port):
    outcome = post_slack(TOKEN, "#alerts", "hello", base_url=f"http://127.0.0.1:{closed_port}/api/",
                         deadline_s=DEADLINE, retries=1)
    assert not outcome.ok and outcome.attempts == 2
    assert "refused" in outcome.error.lower() and TOKEN not in outcome.error
