"""Ingestion keeps every line: accepted rows plus quarantined rows equal lines read."""

import gzip
import json

import duckdb
import pytest

from mvt_pipeline.ingest import ingest_partition
from mvt_pipeline.registry import load_registry

from .conftest import SAMPLE_REGISTRY

GOOD_EXPOSURE = {
    "event_id": "e1", "event_type": "exposure", "ts": "2026-11-02T10:00:00Z", "received_at": "2026-11-02T10:00:02Z",
    "unit_id": "u1", "device_id": "d1", "seq": 1, "experiment_id": "pricing_abn",
    "assignment": {"pricing_banner": "discount"}, "hash_version": "v1",
    "context": {"device": "mobile", "note": "call me at jane.doe@example.com"}, "sdk_extra": "from 10.1.2.3",
}
GOOD_METRIC = {"event_id": "e2", "event_type": "metric", "ts": "2026-11-02T10:05:00Z", "unit_id": "u1",
               "metric": "signup", "value": 1}

CASES = [
    ('{"event_id": "x", broken', "malformed_json"),
    ("[1, 2]", "malformed_json"),
    (json.dumps({**GOOD_METRIC, "event_id": None}), "missing_required:event_id"),
    (json.dumps({**GOOD_METRIC, "event_id": "b1", "ts": "yesterday"}), "bad_timestamp"),
    (json.dumps({**GOOD_METRIC, "event_id": "b2", "value": "12"}), "bad_type:value"),
    ('{"event_id": "b3", "event_type": "metric", "ts": "2026-11-02T10:05:00Z", "unit_id": "u", '
     '"metric": "signup", "value": NaN}', "non_finite_value"),
    (json.dumps({**GOOD_EXPOSURE, "event_id": "b4", "experiment_id": "nope"}), "unknown_experiment"),
    (json.dumps({**GOOD_EXPOSURE, "event_id": "b5", "assignment": {"pricing_banner": "gold"}}), "unknown_level"),
    (json.dumps({**GOOD_EXPOSURE, "event_id": "b6", "assignment": None}), "missing_required:assignment"),
    (json.dumps({**GOOD_METRIC, "event_id": "b7", "event_type": "click"}), "bad_type:event_type"),
    (json.dumps({k: v for k, v in GOOD_METRIC.items() if k != "unit_id"} | {"event_id": "b8"}),
     "missing_required:unit_id"),
]


@pytest.fixture
def registry():
    return load_registry(SAMPLE_REGISTRY)


def _write_day(raw, lines, name="events.jsonl.gz", source="web_sdk", day="2026-11-02"):
    folder = raw / source / f"dt={day}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return path


def test_every_bad_line_lands_in_quarantine_with_its_reason(tmp_path, registry):
    raw = tmp_path / "raw"
    lines = [json.dumps(GOOD_EXPOSURE), json.dumps(GOOD_METRIC)] + [line for line, _ in CASES]
    _write_day(raw, lines)
    conn = duckdb.connect()
    summary = ingest_partition(conn, raw, "2026-11-02", registry)
    assert summary.rows_read == len(lines)
    assert summary.rows_accepted == 2
    assert summary.rows_read == summary.rows_accepted + summary.rows_quarantined
    got = dict(conn.execute("select line_number, reason from raw.quarantine").fetchall())
    assert got == {i + 3: reason for i, (_, reason) in enumerate(CASES)}


def test_pii_is_redacted_and_unknown_fields_kept(tmp_path, registry):
    raw = tmp_path / "raw"
    _write_day(raw, [json.dumps(GOOD_EXPOSURE)])
    conn = duckdb.connect()
    summary = ingest_partition(conn, raw, "2026-11-02", registry)
    context, extra, redactions = conn.execute("select context, extra, pii_redactions from raw.events").fetchone()
    assert "example.com" not in context and "[redacted:email]" in context
    assert json.loads(extra) == {"sdk_extra": "from [redacted:ipv4]"}
    assert redactions == 2 == summary.pii_redactions
    # the session variables ingestion sets for its statements are gone afterwards
    assert conn.execute("select getvariable('mvt_ingest_paths'), getvariable('mvt_ingest_chunk_paths')").fetchone() \
        == (None, None)


def test_reingesting_a_day_replaces_it(tmp_path, registry):
    raw = tmp_path / "raw"
    _write_day(raw, [json.dumps(GOOD_EXPOSURE), json.dumps(GOOD_METRIC), "not json"])
    conn = duckdb.connect()
    ingest_partition(conn, raw, "2026-11-02", registry)
    first = conn.execute("select * exclude (ingested_at) from raw.events order by event_id").fetchall()
    ingest_partition(conn, raw, "2026-11-02", registry)
    second = conn.execute("select * exclude (ingested_at) from raw.events order by event_id").fetchall()
    assert first == second
    assert conn.execute("select count(*) from raw.quarantine").fetchone()[0] == 1
    assert conn.execute("select count(*) from raw.ingest_log").fetchone()[0] == 1


def test_unreadable_file_is_quarantined_whole_and_the_rest_still_loads(tmp_path, registry):
    raw = tmp_path / "raw"
    _write_day(raw, [json.dumps(GOOD_METRIC)], name="a.jsonl")
    bad = raw / "web_sdk" / "dt=2026-11-02" / "b.jsonl.gz"
    bad.write_bytes(gzip.compress(b'{"event_id": "z"}\n' * 100)[:40])  # truncated gzip
    conn = duckdb.connect()
    summary = ingest_partition(conn, raw, "2026-11-02", registry)
    assert summary.rows_accepted == 1
    assert len(summary.unreadable_files) == 1
    rows = conn.execute("select source_file, reason from raw.quarantine").fetchall()
    # the complete lines before the cut are kept (here they lack event_type) plus one truncated_file row
    assert rows and all(f.endswith("b.jsonl.gz") for f, _ in rows)
    assert sum(reason == "truncated_file" for _, reason in rows) == 1


def test_version_strings_are_not_mistaken_for_pii(tmp_path, registry):
    raw = tmp_path / "raw"
    ua = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
    event = {**GOOD_METRIC, "context": {"user_agent": ua, "app_version": "3.12.0"}}
    pii = {**GOOD_METRIC, "event_id": "p2",
           "context": {"ip": "192.168.10.20", "phone": "+1 (415) 555-0100", "v6": "2001:0db8:85a3:0000:0000:8a2e:0370:7334"}}
    _write_day(raw, [json.dumps(event), json.dumps(pii)])
    conn = duckdb.connect()
    ingest_partition(conn, raw, "2026-11-02", registry)
    rows = dict(conn.execute("select event_id, pii_redactions from raw.events").fetchall())
    assert rows == {"e2": 0, "p2": 3}
    context = conn.execute("select context from raw.events where event_id = 'p2'").fetchone()[0]
    assert json.loads(context) == {"ip": "[redacted:ipv4]", "phone": "[redacted:phone]", "v6": "[redacted:ipv6]"}
