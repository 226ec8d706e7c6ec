"""Deliver one alert message to one target (a JSON webhook or a Slack channel), for on-call use.

Why it is built this way:

* A lost alert is worse than a slow one, so transient failures (connection errors, timeouts,
  HTTP 5xx, 429 rate limits) are retried with exponential backoff, honouring Retry-After when it
  fits in the deadline. Errors that will not fix themselves (other 4xx, Slack's ``ok: false``
  such as ``channel_not_found``) are reported at once.
* A hanging target must not stall the sensor that sends alerts. Per-socket timeouts are not
  enough (a server dripping one byte every few seconds never trips them), so each HTTP attempt
  runs in a daemon thread and the caller waits for it only as long as the one overall deadline
  allows. An abandoned attempt is never counted as delivered and its late result or error is
  dropped.
* Nothing raises: every failure is an ``Outcome(ok=False, error=...)``, and the error text never
  holds a token, an Authorization header or a full URL (webhook URLs embed secrets), only
  ``scheme://host:port``.

Pure code: no Dagster imports; the webhook uses only the standard library.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import math
import random
import re
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable
from urllib.parse import parse_qsl, urlsplit

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

__all__ = ["Outcome", "post_slack", "post_webhook"]

log = logging.getLogger(__name__)

# slack_sdk logs every failed request at ERROR; the failure is already reported in the Outcome.
_SLACK_SDK_LOG = log.getChild("slack_sdk")
_SLACK_SDK_LOG.setLevel(logging.CRITICAL)

_USER_AGENT = "mvt-pipeline-alerts/1"
_MIN_WINDOW_S = 0.05  # do not start an attempt with less time than this left
_SLACK_BACKOFF_S = 0.5
_MAX_BODY_BYTES = 1 << 20  # a 2xx answer longer than this is not read further
_MAX_ERROR_CHARS = 300
# Slack error codes that are worth another try (https://api.slack.com/methods/chat.postMessage).
_SLACK_TRANSIENT = frozenset({"ratelimited", "internal_error", "service_unavailable", "request_timeout"})


@dataclass(frozen=True)
class Outcome:
    """The result of delivering one message to one target."""

    target: str  # "webhook" or "slack:<channel>"
    ok: bool
    attempts: int  # HTTP attempts made (an abandoned attempt counts)
    error: str | None  # short reason when not ok; never a secret or a full URL
    elapsed_s: float


@dataclass(frozen=True)
class _Try:
    """What one HTTP attempt came to (built in the worker thread)."""

    ok: bool
    reason: str | None = None
    retryable: bool = False
    retry_after_s: float | None = None


# ---------------------------------------------------------------------------------------------
# helpers


def _origin(url: str) -> str:
    """scheme://host:port of a URL, nothing more (paths and queries can hold secrets)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        if parts.scheme not in ("http", "https") or not host:
            return "<invalid url>"
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return "<invalid url>"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}:{port}"


def _url_secrets(url: str) -> list[str]:
    """Pieces of a URL that must never be printed."""
    out = [url]
    try:
        parts = urlsplit(url)
        out += [url.split("://", 1)[-1], parts.path, parts.query, parts.fragment,
                parts.username or "", parts.password or ""]
        out += [seg for seg in parts.path.split("/") if len(seg) >= 4]
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            out += [f"{key}={value}", value]
    except ValueError:
        pass
    return out


_URL_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://)([^/?#\s'\"<>]*)[^\s'\"<>]*")
_TOKEN_RE = re.compile(r"xox[a-z]-[A-Za-z0-9\-]+|(?i:bearer)\s+\S+")


def _scrub(text: str, secrets: list[str]) -> str:
    """Drop secrets and URLs from text meant for a log line or an Outcome, and keep it short."""
    for secret in sorted({s for s in secrets if s and s not in "/?&="}, key=len, reverse=True):
        if len(secret) >= 3:
            text = text.replace(secret, "***")
    text = _URL_RE.sub(lambda m: m.group(1) + m.group(2).rpartition("@")[2], text)  # no user:pass, path
    text = _TOKEN_RE.sub("***", text)
    text = " ".join(text.split())
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 3] + "..."


def _exc_reason(exc: BaseException) -> str:
    """A short description of a connection-level exception (URLError unwrapped)."""
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        inner = exc.reason
        if isinstance(inner, BaseException):
            exc = inner
        else:
            return f"URLError: {inner}"
    if isinstance(exc, TimeoutError):  # socket.timeout is TimeoutError since 3.10
        return "timed out"
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _retry_after_s(value: Any) -> float | None:
    """Seconds to wait from a Retry-After header value (delta-seconds or an HTTP date)."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
        if value is None:
            return None
    text = str(value).strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), 3600.0)


def _header(headers: Any, name: str) -> Any:
    """Case-insensitive header lookup on a dict or an email.message.Message."""
    if headers is None:
        return None
    try:
        for key, value in headers.items():
            if str(key).lower() == name.lower():
                return value
    except Exception:  # noqa: BLE001 - headers of an unexpected shape: no header
        return None
    return None


class _Attempt:
    """Runs one HTTP attempt in a daemon thread so the caller can stop waiting for it.

    If the caller gives up, the thread finishes (or times out on its socket) on its own; its
    result is simply never read and nothing it raises escapes.
    """

    def __init__(self, fn: Callable[[], _Try]) -> None:
        self._fn = fn
        self._done = threading.Event()
        self.result: _Try | None = None
        threading.Thread(target=self._run, name="alert-delivery-attempt", daemon=True).start()

    def _run(self) -> None:
        try:
            self.result = self._fn()
        except BaseException as exc:  # noqa: BLE001 - a worker must never raise
            self.result = _Try(ok=False, reason=f"internal error: {type(exc).__name__}")
        finally:
            self._done.set()

    def wait(self, timeout: float) -> _Try | None:
        """The attempt's result, or None if it did not finish within timeout."""
        return self.result if self._done.wait(timeout) else None


def _deliver(
    target: str,
    attempt: Callable[[float], _Try],
    *,
    origin: str,
    secrets: list[str],
    deadline_s: float,
    attempt_timeout_s: float,
    retries: int,
    backoff_s: float,
    start: float,
) -> Outcome:
    """The retry loop shared by both targets; `attempt(window_s)` makes one HTTP attempt."""
    deadline = start + deadline_s
    retries = max(0, int(retries))
    backoff_s = max(0.0, float(backoff_s))
    attempts = 0
    reason = "deadline too short for an attempt"
    gave_up = ""
    while True:
        remaining = deadline - time.monotonic()
        if remaining < _MIN_WINDOW_S:
            if attempts:
                gave_up = f"; deadline {deadline_s:g} s reached"
            break
        attempts += 1
        window = min(attempt_timeout_s, remaining)
        result = _Attempt(lambda w=window: attempt(w)).wait(window)
        if result is None:
            result = _Try(ok=False, reason=f"{origin}: no complete response within {window:.1f} s",
                          retryable=True)
        if result.ok:
            log.debug("alert delivered to %s after %d attempt(s)", target, attempts)
            return Outcome(target, True, attempts, None, round(time.monotonic() - start, 3))
        reason = result.reason or "failed"
        log.debug("alert delivery to %s, attempt %d: %s", target, attempts, _scrub(reason, secrets))
        if not result.retryable:
            break
        if attempts > retries:
            break
        delay = backoff_s * 2 ** (attempts - 1)
        delay += random.uniform(0.0, 0.1 * delay)  # a little jitter
        remaining = deadline - time.monotonic()
        if result.retry_after_s is not None and result.retry_after_s + _MIN_WINDOW_S < remaining:
            delay = max(delay, result.retry_after_s + random.uniform(0.0, 0.05))
        # A Retry-After beyond the deadline is ignored: one more early try beats a lost alert.
        if delay + _MIN_WINDOW_S > remaining:
            gave_up = f"; deadline {deadline_s:g} s reached"
            break
        time.sleep(delay)
    error = _scrub(f"{reason} ({attempts} attempt{'s' if attempts != 1 else ''}{gave_up})", secrets)
    return Outcome(target, False, attempts, error, round(time.monotonic() - start, 3))


def _failed(target: str, reason: str, start: float, secrets: list[str]) -> Outcome:
    return Outcome(target, False, 0, _scrub(reason, secrets), round(time.monotonic() - start, 3))


# ---------------------------------------------------------------------------------------------
# webhook


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """urllib would turn a redirected POST into a GET without the body: report the 3xx instead."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, D102
        return None


def _webhook_attempt(url: str, body: bytes, origin: str, window_s: float) -> _Try:
    """One POST; runs in a worker thread. Reads the whole (capped) answer before calling it sent."""
    until = time.monotonic() + window_s
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": _USER_AGENT})
    opener = urllib.request.build_opener(_NoRedirect())  # built per call: proxy env read now
    try:
        with opener.open(request, timeout=max(window_s, _MIN_WINDOW_S)) as response:
            status = response.status
            read = 0
            while read < _MAX_BODY_BYTES:
                if time.monotonic() > until:
                    return _Try(ok=False, reason=f"{origin}: answer not complete within {window_s:.1f} s",
                                retryable=True)
                chunk = response.read1(65536)
                if not chunk:
                    break
                read += len(chunk)
    except urllib.error.HTTPError as exc:
        status = exc.code
        retry_after = _retry_after_s(_header(exc.headers, "Retry-After")) if status in (429, 503) else None
        exc.close()
        retryable = status >= 500 or status == 429
        note = "" if retryable else " (redirect not followed)" if status < 400 else " (not retried)"
        return _Try(ok=False, reason=f"{origin}: HTTP {status}{note}", retryable=retryable,
                    retry_after_s=retry_after)
    except (OSError, http.client.HTTPException) as exc:
        return _Try(ok=False, reason=f"{origin}: connection failed: {_exc_reason(exc)}", retryable=True)
    except Exception as exc:  # noqa: BLE001 - e.g. ValueError from a malformed URL
        return _Try(ok=False, reason=f"{origin}: {type(exc).__name__}", retryable=False)
    if 200 <= status < 300:
        return _Try(ok=True)
    return _Try(ok=False, reason=f"{origin}: HTTP {status}", retryable=status >= 500)


def post_webhook(url: str, payload: dict, *, deadline_s: float = 10.0, attempt_timeout_s: float = 5.0,
                 retries: int = 3, backoff_s: float = 0.5) -> Outcome:
    """POST `payload` as JSON to `url`; 2xx is delivered. Never raises; returns within ~deadline_s.

    5xx, 429, connection errors and timeouts are retried up to `retries` times with backoff
    `backoff_s * 2**k` (+ jitter), or after Retry-After (429/503) when it fits in the deadline.
    Other 4xx and 3xx (redirects are not followed) fail at once. Values JSON cannot encode are
    sent as their str() rather than losing the alert.
    """
    start = time.monotonic()
    target = "webhook"
    secrets = _url_secrets(url) if isinstance(url, str) else []
    try:
        origin = _origin(url) if isinstance(url, str) else "<invalid url>"
        if origin == "<invalid url>":
            return _failed(target, "invalid webhook URL (need http:// or https:// and a host)", start, secrets)
        if not deadline_s > 0:
            return _failed(target, "deadline_s must be > 0", start, secrets)
        try:
            body = json.dumps(payload, default=str).encode("utf-8")
        except (TypeError, ValueError) as exc:
            return _failed(target, f"payload not JSON-encodable: {type(exc).__name__}", start, secrets)
        return _deliver(target, lambda window: _webhook_attempt(url, body, origin, window),
                        origin=origin, secrets=secrets, deadline_s=deadline_s,
                        attempt_timeout_s=attempt_timeout_s, retries=retries, backoff_s=backoff_s,
                        start=start)
    except Exception as exc:  # noqa: BLE001 - the caller is a sensor: never raise
        return _failed(target, f"internal error: {type(exc).__name__}", start, secrets)


# ---------------------------------------------------------------------------------------------
# Slack


def _slack_base_url(base_url: str | None) -> str:
    """The API root ending in "/"; a full ".../chat.postMessage" URL is accepted too."""
    url = (base_url or WebClient.BASE_URL).strip()
    for suffix in ("chat.postMessage/", "chat.postMessage"):
        if url.endswith(suffix):
            url = url[: -len(suffix)]
            break
    return url if url.endswith("/") else url + "/"


def _slack_attempt(token: str, channel: str, text: str, blocks: list | None, base_url: str,
                   origin: str, window_s: float) -> _Try:
    """One chat.postMessage call (slack_sdk's own retries off: one call = one HTTP attempt)."""
    client = WebClient(token=token, base_url=base_url, timeout=max(window_s, _MIN_WINDOW_S),  # type: ignore[arg-type]
                       retry_handlers=[], logger=_SLACK_SDK_LOG)
    try:
        client.chat_postMessage(channel=channel, text=text, blocks=blocks)
        return _Try(ok=True)
    except SlackApiError as exc:
        response = exc.response
        status = int(getattr(response, "status_code", 0) or 0)
        data = getattr(response, "data", None)
        code = str(data.get("error") or "") if isinstance(data, dict) else ""
        if code.startswith("Received a response in a non-JSON format"):
            code = "non-JSON response"
        retry_after = _retry_after_s(_header(getattr(response, "headers", None), "Retry-After"))
        if status == 429 or code == "ratelimited":
            return _Try(ok=False, reason=f"slack rate limited (HTTP {status})", retryable=True,
                        retry_after_s=1.0 if retry_after is None else retry_after)
        if status >= 500 or code in _SLACK_TRANSIENT:
            detail = f": {code}" if code else ""
            return _Try(ok=False, reason=f"slack HTTP {status}{detail}", retryable=True,
                        retry_after_s=retry_after if status == 503 else None)
        if status == 200:
            return _Try(ok=False, reason=f"slack error: {code or 'unknown'}")
        return _Try(ok=False, reason=f"slack HTTP {status}: {code or 'unknown'}")
    except (OSError, http.client.HTTPException) as exc:
        return _Try(ok=False, reason=f"{origin}: connection failed: {_exc_reason(exc)}", retryable=True)
    except Exception as exc:  # noqa: BLE001 - e.g. SlackRequestError for a non-http base_url
        return _Try(ok=False, reason=f"slack client error: {type(exc).__name__}")


def post_slack(token: str, channel: str, text: str, *, blocks: list | None = None, base_url: str | None = None,
               deadline_s: float = 10.0, attempt_timeout_s: float = 5.0, retries: int = 3) -> Outcome:
    """Post `text` (and optional `blocks`) to a Slack channel via chat.postMessage.

    `"ok": false` answers (e.g. channel_not_found, invalid_auth) fail at once with the Slack error
    code; 429 (after Retry-After), 5xx, transient Slack errors and connection errors are retried
    within the deadline. `base_url` is the API root (default https://slack.com/api/). Never raises.
    """
    start = time.monotonic()
    target = f"slack:{channel}"
    secrets = [token] if isinstance(token, str) else []
    try:
        url = _slack_base_url(base_url)
        secrets += _url_secrets(url) if base_url else []
        origin = _origin(url)
        if not deadline_s > 0:
            return _failed(target, "deadline_s must be > 0", start, secrets)
        if not token or not str(token).strip():
            return _failed(target, "no Slack token", start, secrets)
        if not text or not str(text).strip():
            text = "(alert)"  # Slack needs a top-level text for notifications
        return _deliver(target, lambda window: _slack_attempt(token, channel, text, blocks, url, origin, window),
                        origin=origin, secrets=secrets, deadline_s=deadline_s,
                        attempt_timeout_s=attempt_timeout_s, retries=retries, backoff_s=_SLACK_BACKOFF_S,
                        start=start)
    except Exception as exc:  # noqa: BLE001 - the caller is a sensor: never raise
        return _failed(target, f"internal error: {type(exc).__name__}", start, secrets)
