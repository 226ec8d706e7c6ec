"""Alerts when a data or guardrail check fails: a log line, an `analysis.alerts` row, and
optionally a webhook / Slack message (targets from the environment, never from code)."""

from .delivery import AlertTargets, deliver
from .model import Alert, store_alerts

__all__ = ["Alert", "AlertTargets", "deliver", "store_alerts"]
