"""The alert record: one per (run, experiment, symptom, kind), as stored in `analysis.alerts`.

A *signal* is what a check says tonight about one (experiment, symptom): firing or not. The policy
(`policy.py`) turns signals into alerts: a new firing alert, a suppressed repeat inside the quiet
period, or a `resolved` alert when a firing symptom stops firing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

PLATFORM = "*"  # experiment_id of symptoms that are not about one experiment (a failed run, a data gate)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


@dataclass(frozen=True)
class Signal:
    """One (experiment, symptom) as a check saw it in a run."""

    run_id: str
    asset: str
    check_name: str
    experiment_id: str
    symptom: str
    firing: bool
    severity: str  # ERROR / WARN
    route: str  # page / ticket
    partition: str | None = None
    details: dict = field(default_factory=dict)  # cell, metric, observed, threshold, flag, report, summary ...


@dataclass
class Alert:
    alert_key: str
    run_id: str
    experiment_id: str
    symptom: str
    kind: str  # firing / resolved
    severity: str
    route: str  # page / ticket
    asset: str
    check_name: str
    partition: str | None
    message: str
    details: dict
    owner: str | None = None
    status: str = "pending"  # pending / delivered / failed / suppressed / no_target
    delivered_to: str = ""
    attempts: int = 0
    last_error: str | None = None
    created_at: dt.datetime = field(default_factory=utc_now)
    delivered_at: dt.datetime | None = None

    @staticmethod
    def key_of(signal: Signal, kind: str) -> str:
        """Unique per run: a run seen twice (sensor and command line) is alerted on once."""
        return f"{signal.run_id}:{signal.experiment_id}:{signal.symptom}:{kind}"
