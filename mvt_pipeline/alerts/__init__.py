"""Alerts an on-call engineer can act on: signals from checks become de-duplicated alerts
(`policy.py`), routed to a page or a ticket target, delivered with retries and one deadline
(`transport.py`), recorded with their outcome in `analysis.alerts` (`outbox.py`); targets and
secrets come from the environment only (`config.py`)."""

from .model import Alert, Signal
from .service import raise_alerts

__all__ = ["Alert", "Signal", "raise_alerts"]
