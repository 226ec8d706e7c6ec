"""Send alerts to a generic webhook (JSON `{"text": ...}`) and/or Slack's chat.postMessage.

Targets come only from environment variables; a delivery failure is reported, never raised, so a
broken webhook cannot hide the alert row or stop the sensor.
"""

from __future__ import annotations

import json
import urllib.request

from ..config import AlertSettings, settings
from .model import Alert


class AlertTargets(AlertSettings):
    """Where alerts go: the alert settings of `config.py`, or explicit targets (tests)."""

    @classmethod
    def from_env(cls) -> "AlertTargets":
        a = settings().alerts
        return cls(webhook_url=a.webhook_url, slack_token=a.slack_token, slack_channel=a.slack_channel,
                   slack_api_url=a.slack_api_url)


def _post(url: str, payload: dict, headers: dict, timeout: float) -> None:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (URL from operator env)
        if response.status >= 300:
            raise OSError(f"HTTP {response.status}")


def deliver(alerts: list[Alert], targets: AlertTargets, timeout: float = 5.0) -> tuple[dict[str, str], list[str]]:
    """Returns ({alert key: where it went}, [delivery errors])."""
    delivered: dict[str, str] = {}
    errors: list[str] = []
    for alert in alerts:
        sent = []
        if targets.webhook_url:
            try:
                _post(targets.webhook_url, {"text": alert.text(), "alert": alert.details | {
                    "asset": alert.asset, "check": alert.check_name, "severity": alert.severity,
                    "run_id": alert.run_id, "partition": alert.partition}}, {}, timeout)
                sent.append("webhook")
            except Exception as exc:  # noqa: BLE001 - report and continue
                errors.append(f"webhook: {exc}")
        if targets.slack_token and targets.slack_channel:
            try:
                _post(targets.slack_api_url, {"channel": targets.slack_channel, "text": alert.text()},
                      {"Authorization": f"Bearer {targets.slack_token}"}, timeout)
                sent.append("slack")
            except Exception as exc:  # noqa: BLE001
                errors.append(f"slack: {exc}")
        delivered[alert.key] = ",".join(["log", *sent])
    return delivered, errors
