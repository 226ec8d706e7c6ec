"""From tonight's signals and the alerts already sent to the alerts to send: de-duplicated *before*
delivery, so a re-run, a backfill or a second sensor tick cannot page twice.

Per (experiment, symptom), the state is its last firing or resolved alert that was not suppressed:
* firing, state open, last firing within the quiet period -> a `suppressed` row (recorded, not sent);
* firing otherwise (first time, after a resolution, or the quiet period is over: a daily reminder)
  -> a new firing alert;
* not firing and state open -> one `resolved` alert; not firing and closed -> nothing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from .messages import safe_details
from .model import Alert, Signal, utc_now


@dataclass(frozen=True)
class LastAlert:
    kind: str  # firing / resolved
    created_at: dt.datetime


def plan(signals: list[Signal], state: dict[tuple[str, str], LastAlert], quiet_period: dt.timedelta,
         owners: dict[str, str] | None = None, now: dt.datetime | None = None) -> list[Alert]:
    """Alerts to record for these signals; `state` maps (experiment_id, symptom) to its last alert.
    `owners` maps experiment_id to its owner (routing)."""
    now = now or utc_now()
    owners = owners or {}
    out: list[Alert] = []
    state = dict(state)
    for s in signals:
        last = state.get((s.experiment_id, s.symptom))
        is_open = last is not None and last.kind == "firing"
        if s.firing:
            kind = "firing"
            status = "suppressed" if is_open and now - last.created_at < quiet_period else "pending"
        elif is_open:
            kind, status = "resolved", "pending"
        else:
            continue
        alert = Alert(alert_key=Alert.key_of(s, kind), run_id=s.run_id, experiment_id=s.experiment_id,
                      symptom=s.symptom, kind=kind, severity=s.severity, route=s.route, asset=s.asset,
                      check_name=s.check_name, partition=s.partition, message="", details=safe_details(s.details),
                      owner=owners.get(s.experiment_id) or s.details.get("owner"), status=status, created_at=now)
        out.append(alert)
        if status != "suppressed":
            state[(s.experiment_id, s.symptom)] = LastAlert(kind, now)
    return out
