"""Telemetry transport: sequence numbers, collector lag, and the injected faults.

Order: seq per device_id (consecutive over the device's events by ts) -> loss (drops after seq, so
gaps reveal it) -> late arrival (received_at + 1..3 days) -> PII in context (decided per event, so a
re-send carries it too) -> duplicates (identical event, received_at later by 1 s..30 min).
Malformed lines are added by the writer (extra lines, new event ids, never replacing an event).
"""

from __future__ import annotations

import json

import numpy as np

from .truth import Faults

SECOND, MINUTE, DAY = 1000, 60_000, 86_400_000
PII_KINDS = ["email", "phone", "ip"]
MALFORMED_KINDS = ["broken_json", "missing_field", "bad_timestamp", "unknown_experiment"]


def _take(ev: dict[str, np.ndarray], idx) -> dict[str, np.ndarray]:
    return {k: v[idx] for k, v in ev.items()}


def sequence_and_lag(ev: dict[str, np.ndarray], rng) -> dict[str, np.ndarray]:
    """Sort by (device, ts), number events per device from 1, add the event number and received_at."""
    devkey = ev["unit"] * 2 + ev["dev"]
    order = np.lexsort((ev["ts"], devkey))
    ev = _take(ev, order)
    devkey = devkey[order]
    n = len(devkey)
    starts = np.r_[0, np.nonzero(np.diff(devkey))[0] + 1] if n else np.zeros(0, dtype=np.int64)
    group_start = np.repeat(starts, np.diff(np.r_[starts, n]))
    ev["seq"] = np.arange(n) - group_start + 1
    ev["event_no"] = np.arange(n, dtype=np.int64)
    lag = 100 + np.minimum(rng.exponential(1500.0, n), 120_000).astype(np.int64)
    ev["received"] = ev["ts"] + lag
    return ev


def apply_faults(ev: dict[str, np.ndarray], faults: Faults, rng) -> tuple[dict[str, np.ndarray], dict]:
    n = len(ev["ts"])
    lost = rng.random(n) < faults.loss_rate
    devkey = ev["unit"] * 2 + ev["dev"]
    last_kept = np.zeros(int(devkey.max()) + 1 if n else 0, dtype=np.int64)
    np.maximum.at(last_kept, devkey[~lost], ev["seq"][~lost])
    lost_trailing = int((lost & (ev["seq"] > last_kept[devkey])).sum()) if n else 0
    ev = _take(ev, ~lost)
    m = len(ev["ts"])
    late = rng.random(m) < faults.late_rate
    ev["received"] = ev["received"] + np.where(late, rng.integers(DAY, 3 * DAY + 1, m), 0)
    ev["pii"] = np.where(rng.random(m) < faults.pii_rate, rng.integers(0, len(PII_KINDS), m), -1).astype(np.int8)
    ev["pii_n"] = rng.integers(0, 10_000, m)
    dup = np.nonzero(rng.random(m) < faults.duplicate_rate)[0]
    copies = _take(ev, dup)
    copies["received"] = copies["received"] + rng.integers(SECOND, 30 * MINUTE, len(dup))
    out = {k: np.concatenate([ev[k], copies[k]]) for k in ev}
    pii_lines = int((out["pii"] >= 0).sum())
    counts = {
        "events_generated": int(n),
        "lost": int(lost.sum()),
        "lost_trailing": lost_trailing,  # lost after the device's last delivered seq: no gap shows them
        "late": int(late.sum()),
        "duplicates": int(len(dup)),
        "pii_lines": pii_lines,
        "pii_by_kind": {k: int((out["pii"] == i).sum()) for i, k in enumerate(PII_KINDS)},
    }
    return out, counts


def malformed_line(line: str, kind: str, rng) -> str:
    """A broken variant of a good line (new event id, no seq) of the given kind."""
    d = json.loads(line)
    d["event_id"] = d["event_id"] + "-x"
    d.pop("seq", None)
    if kind == "broken_json":
        text = json.dumps(d, separators=(",", ":"))
        return text[: max(10, len(text) // 2)]
    if kind == "missing_field":
        d.pop(["unit_id", "ts", "event_id"][int(rng.integers(0, 3))], None)
    elif kind == "bad_timestamp":
        d["ts"] = ["2026-13-45T25:61:00Z", "yesterday", "1793527200"][int(rng.integers(0, 3))]
    elif kind == "unknown_experiment":
        for key in ("metric", "value"):
            d.pop(key, None)
        d["event_type"] = "exposure"
        d["experiment_id"] = "ghost_experiment"
        d["assignment"] = {"arm": "b"}
        d["hash_version"] = "v1"
    return json.dumps(d, separators=(",", ":"))
