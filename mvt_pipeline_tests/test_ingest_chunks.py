"""A partition is read in chunks of files inside one write transaction: the result must not depend
on the chunking, a failure half-way must leave the previous partition untouched, and clean files
must be read by the fast reader (a silent fall back to the line-by-line reader would only show as
a slow night)."""

import gzip
import json

import duckdb
import pytest

from mvt_pipeline.ingest import file_readers, ingest_partition, raw_loader
from mvt_pipeline.registry import load_registry

from .conftest import SAMPLE_REGISTRY
from .test_ingest_corpus import DAY, METRIC, _folder

TABLES = {"raw.events": "* exclude (ingested_at)", "raw.quarantine": "* exclude (ingested_at)",
          "raw.ingest_log": "* exclude (ingested_at)"}


@pytest.fixture
def registry():
    return load_registry(SAMPLE_REGISTRY)


def _dump(raw, n_files=5, lines_per_file=300, tag="v1"):
    for source in ("web_sdk", "ios_sdk"):
        folder = _folder(raw, source)
        for f in range(n_files):
            lines = [json.dumps({**METRIC, "event_id": f"{tag}-{source}-{f}-{i}", "seq": i}, separators=(",", ":"))
                     for i in range(lines_per_file)]
            lines[7] = '{"event_id": broken'
            lines[8] = ""  # blank: skipped, numbering stays physical
            name = f"part-{f}.jsonl" + (".gz" if f % 2 else "")
            data = ("\n".join(lines) + "\n").encode()
            (folder / name).write_bytes(gzip.compress(data) if f % 2 else data)


def _snapshot(conn):
    return {t: sorted(conn.execute(f"select {cols} from {t}").fetchall(), key=repr) for t, cols in TABLES.items()}


def test_chunking_does_not_change_the_result(tmp_path, registry, monkeypatch):
    raw = tmp_path / "raw"
    _dump(raw)
    one = duckdb.connect()
    summary = ingest_partition(one, raw, DAY, registry)
    assert len(file_readers.jsonl_chunks(file_readers.staged_files([("s", p) for p in sorted(raw.rglob("*.jsonl*"))]))) == 1
    assert all(f.warning is None for f in summary.files), "clean files must take the fast reader"
    assert summary.rows_read == 10 * 299 and summary.rows_quarantined == 10

    monkeypatch.setattr(file_readers, "CHUNK_TEXT_BYTES", 1)  # every file its own chunk
    messages = []
    many = duckdb.connect()
    ingest_partition(many, raw, DAY, registry, progress=messages.append)
    assert len(messages) == 10 and "chunk 10/10" in messages[-1]
    assert _snapshot(one) == _snapshot(many)
    assert one.execute("select line_number from raw.quarantine order by 1 limit 1").fetchone()[0] == 8


def test_a_failure_half_way_leaves_the_previous_partition_untouched(tmp_path, registry, monkeypatch):
    raw = tmp_path / "raw"
    _dump(raw, tag="v1")
    conn = duckdb.connect()
    ingest_partition(conn, raw, DAY, registry)
    before = _snapshot(conn)

    for path in raw.rglob("*.jsonl*"):
        path.unlink()
    _dump(raw, tag="v2")
    monkeypatch.setattr(file_readers, "CHUNK_TEXT_BYTES", 1)
    real = raw_loader._load_chunk
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(raw_loader, "_load_chunk", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        ingest_partition(conn, raw, DAY, registry)
    assert _snapshot(conn) == before
    assert conn.execute("select count(*) from raw.events where event_id like 'v2-%'").fetchone()[0] == 0

    monkeypatch.setattr(raw_loader, "_load_chunk", real)
    summary = ingest_partition(conn, raw, DAY, registry)
    assert not summary.skipped_unchanged
    assert conn.execute("select count(*) from raw.events where event_id like 'v1-%'").fetchone()[0] == 0


def test_an_sdk_key_order_is_detected_per_chunk_and_changes_nothing_but_speed(tmp_path, registry, monkeypatch):
    """Lines written in another consistent key order (an SDK serializing its own struct) are rebuilt
    in that order by the fast path, and give the same rows as lines in contract order."""
    events = [{**METRIC, "event_id": f"k-{i}", "seq": i} for i in range(200)]
    results = {}
    for order, key in (("contract", None), ("sorted", sorted)):
        raw = tmp_path / order / "raw"
        lines = [json.dumps(dict(sorted(e.items())) if key else e, separators=(",", ":")) for e in events]
        (_folder(raw, "web_sdk") / "part-0.jsonl").write_text("\n".join(lines) + "\n")
        shapes_seen = []
        real = raw_loader.fast_select_sql

        def spy(lines_rel, levels, cells, shapes=(), real=real, seen=shapes_seen):
            seen.append(shapes)
            return real(lines_rel, levels, cells, shapes)

        monkeypatch.setattr(raw_loader, "fast_select_sql", spy)
        conn = duckdb.connect()
        assert ingest_partition(conn, raw, DAY, registry).rows_accepted == 200
        results[order] = sorted(conn.execute(
            "select * exclude (ingested_at, source_file) from raw.events").fetchall(), key=repr)
        if key:
            assert (tuple(sorted(METRIC)), False) in shapes_seen[0]
    assert results["contract"] == results["sorted"]
