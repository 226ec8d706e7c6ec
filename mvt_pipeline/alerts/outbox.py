"""`analysis.alerts` as the alerts' outbox, and a spool directory for when the warehouse is busy.

Why a spool: DuckDB has one writer, and a sensor tick may fall while a run holds the warehouse. The
tick then writes what it has to a JSON file (temp name, then rename) under
`<data dir>/alerts/outbox/`, and the next tick or run that gets the warehouse replays it, so no alert
or delivery outcome is lost. Undelivered alerts stay `pending`/`failed` in the table and are retried.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import uuid
from pathlib import Path

import duckdb

from ..warehouse.analysis_schema import ensure_table
from .model import Alert, Signal
from .policy import LastAlert

MAX_ATTEMPTS = 5  # a target still failing after this many deliveries (one per tick) is given up: given_up
_COLUMNS = ("alert_key", "run_id", "experiment_id", "symptom", "kind", "severity", "route", "asset", "check_name",
            "partition", "message", "details", "owner", "status", "delivered_to", "attempts", "last_error",
            "created_at", "delivered_at")


def alert_state(conn: duckdb.DuckDBPyConnection) -> dict[tuple[str, str], LastAlert]:
    """The last firing/resolved alert (not suppressed) per (experiment, symptom)."""
    ensure_table(conn, "alerts")
    rows = conn.execute(
        "select experiment_id, symptom, kind, created_at from ("
        " select *, row_number() over (partition by experiment_id, symptom order by created_at desc, kind) as r"
        " from analysis.alerts where symptom is not null and kind is not null and status <> 'suppressed')"
        " where r = 1").fetchall()
    return {(e, s): LastAlert(k, c) for e, s, k, c in rows}


def insert_alerts(conn: duckdb.DuckDBPyConnection, alerts: list[Alert]) -> list[Alert]:
    """Insert alerts whose key is new; returns those inserted (a run processed twice adds nothing)."""
    ensure_table(conn, "alerts")
    new = []
    for a in alerts:
        values = [getattr(a, c) for c in _COLUMNS]
        values[_COLUMNS.index("details")] = json.dumps(a.details, default=str)
        cols = ", ".join(f'"{c}"' for c in _COLUMNS)
        inserted = conn.execute(
            f"insert into analysis.alerts ({cols}) values ({', '.join('?' for _ in _COLUMNS)})"
            " on conflict do nothing returning alert_key", values).fetchall()
        if inserted:
            new.append(a)
    return new


def due_alerts(conn: duckdb.DuckDBPyConnection, limit: int) -> list[Alert]:
    """Alerts still to deliver (new, or failed on an earlier tick), oldest first."""
    ensure_table(conn, "alerts")
    cur = conn.execute(
        f"select {', '.join(chr(34) + c + chr(34) for c in _COLUMNS)} from analysis.alerts"
        " where status in ('pending', 'failed') and coalesce(attempts, 0) < ? and kind is not null"
        " order by created_at limit ?", [MAX_ATTEMPTS, limit])
    out = []
    for row in cur.fetchall():
        values = dict(zip(_COLUMNS, row))
        values["details"] = json.loads(values["details"]) if values["details"] else {}
        values["attempts"] = values["attempts"] or 0
        values["delivered_to"] = values["delivered_to"] or ""
        out.append(Alert(**values))
    return out


def record_outcome(conn: duckdb.DuckDBPyConnection, alert: Alert) -> None:
    conn.execute(
        "update analysis.alerts set status = ?, delivered_to = ?, attempts = ?, last_error = ?, delivered_at = ?,"
        " message = ? where alert_key = ?",
        [alert.status, alert.delivered_to, alert.attempts, alert.last_error, alert.delivered_at, alert.message,
         alert.alert_key])


# --- spool ----------------------------------------------------------------------------------------

def _encode(obj):
    if isinstance(obj, dt.datetime):
        return {"__datetime__": obj.isoformat()}
    raise TypeError(type(obj))


def _decode(d: dict):
    return dt.datetime.fromisoformat(d["__datetime__"]) if "__datetime__" in d else d


def spool(directory: Path, kind: str, items: list) -> Path | None:
    """Write signals or alert outcomes to the spool (atomic: temp name, then rename)."""
    if not items:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}-{kind}.json"
    tmp = directory / f".{name}.tmp"
    tmp.write_text(json.dumps({"kind": kind, "items": [dataclasses.asdict(i) for i in items]}, default=_encode))
    os.replace(tmp, directory / name)
    return directory / name


def spooled(directory: Path) -> list[tuple[Path, str, list]]:
    """Spooled files, oldest first: (path, "signals" | "outcomes", items)."""
    if not directory.is_dir():
        return []
    out = []
    for path in sorted(p for p in directory.glob("*.json") if not p.is_symlink()):
        try:
            data = json.loads(path.read_text(), object_hook=_decode)
        except (OSError, ValueError):
            path.rename(path.with_suffix(".unreadable"))
            continue
        cls = Signal if data.get("kind") == "signals" else Alert
        out.append((path, data.get("kind"), [cls(**i) for i in data.get("items", [])]))
    return out
