"""The text of an alert: what an on-call engineer needs to act without opening anything else.

Experiment, cell, metric, observed vs threshold, the flag variant to turn off, a runbook hint and
links to the report and the Dagster run. Free text from checks can quote telemetry (a quarantined
line), so every string is scrubbed of e-mail addresses, phone numbers and IP addresses first.
"""

from __future__ import annotations

import re

from ..ingest.validation_sql import PII_PATTERNS
from ..units import fmt_level
from .model import PLATFORM, Alert

_PII = re.compile("|".join(f"(?:{p})" for p in PII_PATTERNS.values()))
_MAX_TEXT = 600
SAFE_DETAIL_KEYS = ("cell", "metric", "observed", "control", "threshold", "unit", "flag", "window_hours",
                    "decision", "report", "runbook", "summary", "owner")


def scrub(value):
    """Redact PII in strings (recursively in lists and dicts); numbers and None pass."""
    if isinstance(value, str):
        return _PII.sub("[redacted]", value)[:_MAX_TEXT]
    if isinstance(value, dict):
        return {str(k): scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v) for v in value][:20]
    return value


def safe_details(details: dict) -> dict:
    """Only the known, short fields of a signal (no raw rows, no samples), scrubbed."""
    return scrub({k: details[k] for k in SAFE_DETAIL_KEYS if details.get(k) is not None})


def _fmt(x, unit: str | None = None) -> str:
    """Observed, threshold and control are levels (a rate, a P95) or a budget share."""
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return f"{x:.0%} of error budget" if unit == "of error budget" else fmt_level(x, unit)
    return str(x) + (f" {unit}" if unit else "")


def report_link(details: dict, report_base_url: str | None) -> str | None:
    report = details.get("report")
    if not report:
        return None
    name = "/".join(str(report).replace("\\", "/").rsplit("/", 2)[-2:])  # <as_of>/<experiment>.html
    return f"{report_base_url.rstrip('/')}/{name}" if report_base_url else str(report)


def run_link(run_id: str, dagster_base_url: str | None) -> str | None:
    return f"{dagster_base_url.rstrip('/')}/runs/{run_id}" if dagster_base_url and run_id else None


def compose(alert: Alert, report_base_url: str | None = None, dagster_base_url: str | None = None) -> str:
    d = alert.details
    who = "platform" if alert.experiment_id == PLATFORM else alert.experiment_id
    head = "RESOLVED" if alert.kind == "resolved" else ("PAGE" if alert.route == "page" else "TICKET")
    lines = [f"[mvt_pipeline] {head} {alert.severity} {who}: {alert.symptom.replace('_', ' ')}"
             + (f" [{alert.partition}]" if alert.partition else "")]
    if alert.kind == "resolved":
        lines.append("The check passes again" + (f" for {d['cell']}" if d.get("cell") else "") + ".")
    else:
        if d.get("cell"):
            lines.append(f"Cell: {d['cell']}")
        if d.get("metric") is not None:
            observed = f"observed {_fmt(d['observed'], d.get('unit'))}" if d.get("observed") is not None else ""
            threshold = f" vs threshold {_fmt(d['threshold'], d.get('unit'))}" if d.get("threshold") is not None else ""
            window = f" in the last {d['window_hours']} h" if d.get("window_hours") else ""
            control = f" (control {_fmt(d['control'], d.get('unit'))})" if d.get("control") is not None else ""
            lines.append(f"Metric: {d['metric']}: {observed}{threshold}{control}{window}".rstrip(": "))
        if d.get("flag"):
            lines.append(f"Turn off: {d['flag']}")
        if d.get("summary"):
            lines.append(str(d["summary"]))
        if d.get("runbook"):
            lines.append(f"Runbook: {d['runbook']}")
    links = [x for x in (report_link(d, report_base_url), run_link(alert.run_id, dagster_base_url)) if x]
    if links:
        lines.append("Links: " + " | ".join(links))
    return scrub("\n".join(lines)) if len("\n".join(lines)) <= _MAX_TEXT else "\n".join(scrub(l) for l in lines)
