"""The alert record and its warehouse table."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field

from ..warehouse.analysis_schema import ensure_table


@dataclass(frozen=True)
class Alert:
    run_id: str
    asset: str
    check_name: str
    severity: str
    message: str
    details: dict = field(default_factory=dict)
    partition: str | None = None
    created_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).replace(tzinfo=None))

    @property
    def key(self) -> str:
        """One alert per (run, asset, check): re-evaluating a sensor tick must not duplicate it."""
        return f"{self.run_id}:{self.asset}:{self.check_name}"

    def text(self) -> str:
        where = f" [{self.partition}]" if self.partition else ""
        return f"[mvt_pipeline] {self.severity}: {self.asset}.{self.check_name}{where} failed: {self.message}"


def store_alerts(conn, alerts: list[Alert], delivered_to: dict[str, str]) -> int:
    """Insert alerts not yet stored; returns how many rows were new."""
    ensure_table(conn, "alerts")
    new = 0
    for alert in alerts:
        row = asdict(alert)
        exists = conn.execute("select count(*) from analysis.alerts where alert_key = ?", [alert.key]).fetchone()[0]
        if exists:
            continue
        conn.execute(
            "insert into analysis.alerts (alert_key, run_id, asset, check_name, severity, partition, message, details,"
            " delivered_to, created_at) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [alert.key, row["run_id"], row["asset"], row["check_name"], row["severity"], row["partition"],
             row["message"], json.dumps(row["details"], default=str), delivered_to.get(alert.key, "log"),
             row["created_at"]],
        )
        new += 1
    return new
