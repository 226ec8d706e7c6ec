"""A corpus of bad inputs, mixed with good lines in the same files, in every supported format:
each line lands where it should (accepted or quarantined with its reason) and nothing is lost."""

import gzip
import json

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mvt_pipeline.ingest import ingest_partition
from mvt_pipeline.registry import load_registry

from .conftest import SAMPLE_REGISTRY

DAY = "2026-11-02"
EXPOSURE = {
    "event_id": "x1", "event_type": "exposure", "ts": "2026-11-02T10:00:00Z", "received_at": "2026-11-02T10:00:02Z",
    "unit_id": "u1", "device_id": "d1", "seq": 1, "experiment_id": "pricing_abn",
    "assignment": {"pricing_banner": "discount"}, "hash_version": "v1", "context": {"device": "mobile"},
}
METRIC = {"event_id": "m1", "event_type": "metric", "ts": "2026-11-02T10:05:00Z", "received_at": "2026-11-02T10:05:01Z",
          "unit_id": "u1", "device_id": "d1", "seq": 2, "metric": "signup", "value": 1}


def metric(event_id, **kw):
    return json.dumps({**METRIC, "event_id": event_id, **kw})


# (line, expected reason or None = accepted)
JSONL_CORPUS = [
    (json.dumps(EXPOSURE), None),
    (metric("ok-int-id", unit_id=12345), None),
    (metric("skew", ts="2026-11-02T12:00:00Z", received_at="2026-11-02T10:00:00Z"), None),  # clock ahead: kept
    (metric("extra", sdk={"name": "web", "build": 7}), None),
    ('{"event_id": "x", broken', "malformed_json"),
    ("[1, 2]", "malformed_json"),
    ('"just a string"', "malformed_json"),
    (metric(""), "missing_required:event_id"),
    (json.dumps({k: v for k, v in METRIC.items() if k != "event_type"}), "missing_required:event_type"),
    (metric("b-et", event_type="click"), "bad_type:event_type"),
    (json.dumps({k: v for k, v in METRIC.items() if k != "ts"} | {"event_id": "b-nots"}), "missing_required:ts"),
    (metric("b-ts", ts="2026-13-45T25:61:00Z"), "bad_timestamp"),
    (metric("b-ts2", ts=1793527200), "bad_timestamp"),
    (metric("b-rcv", received_at="soon"), "bad_timestamp"),
    (json.dumps({k: v for k, v in METRIC.items() if k != "unit_id"} | {"event_id": "b-nou"}), "missing_required:unit_id"),
    (metric("b-uobj", unit_id={"id": 1}), "bad_type:unit_id"),
    (metric("b-seq", seq="7"), "bad_type:seq"),
    (metric("b-seq2", seq=1.5), "bad_type:seq"),
    (metric("b-ctx", context="mobile"), "bad_type:context"),
    (json.dumps({**EXPOSURE, "event_id": "b-noexp", "experiment_id": None}), "missing_required:experiment_id"),
    (json.dumps({**EXPOSURE, "event_id": "b-noasg", "assignment": None}), "missing_required:assignment"),
    (json.dumps({**EXPOSURE, "event_id": "b-asg", "assignment": ["discount"]}), "bad_type:assignment"),
    (json.dumps({**EXPOSURE, "event_id": "b-exp", "experiment_id": "ghost"}), "unknown_experiment"),
    (json.dumps({**EXPOSURE, "event_id": "b-lvl", "assignment": {"pricing_banner": "gold"}}), "unknown_level"),
    (json.dumps({**EXPOSURE, "event_id": "b-fac", "assignment": {"no_such_factor": "discount"}}), "unknown_level"),
    (json.dumps({**EXPOSURE, "event_id": "b-lvlt", "assignment": {"pricing_banner": 1}}), "unknown_level"),
    (json.dumps({k: v for k, v in METRIC.items() if k != "metric"} | {"event_id": "b-nom"}), "missing_required:metric"),
    (json.dumps({k: v for k, v in METRIC.items() if k != "value"} | {"event_id": "b-nov"}), "missing_required:value"),
    (metric("b-val", value="12"), "bad_type:value"),
    (metric("b-nan", value=1).replace('"value": 1', '"value": NaN'), "non_finite_value"),
    (metric("b-inf", value=1).replace('"value": 1', '"value": -Infinity'), "non_finite_value"),
    (metric("b-nul", note="a\x00b").replace("\\u0000", "\x00"), "encoding"),
    (metric("b-big", blob="x" * 1_100_000), "oversized_line"),
]


@pytest.fixture
def registry():
    return load_registry(SAMPLE_REGISTRY)


def _folder(raw, source="web_sdk", day=DAY):
    folder = raw / source / f"dt={day}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _reasons(conn, file_suffix):
    return dict(conn.execute("select line_number, reason from raw.quarantine where source_file like ?",
                             [f"%{file_suffix}"]).fetchall())


def _assert_accounting(conn, summary):
    assert not summary.mismatched_files
    log = conn.execute("select sum(rows_read), sum(rows_accepted), sum(rows_quarantined) from raw.ingest_log").fetchone()
    assert log[0] == log[1] + log[2] == summary.rows_read
    assert conn.execute("select count(*) from raw.events").fetchone()[0] == summary.rows_accepted
    assert conn.execute("select count(*) from raw.quarantine").fetchone()[0] == summary.rows_quarantined


@pytest.mark.parametrize("name", ["corpus.jsonl", "corpus.jsonl.gz"])
def test_every_reason_code_in_one_file(tmp_path, registry, name):
    raw = tmp_path / "raw"
    data = ("\n".join(line for line, _ in JSONL_CORPUS) + "\n\n").encode()  # a trailing blank line is not counted
    (_folder(raw) / name).write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    conn = duckdb.connect()
    summary = ingest_partition(conn, raw, DAY, registry)
    expected = {i + 1: reason for i, (_, reason) in enumerate(JSONL_CORPUS) if reason}
    assert _reasons(conn, name) == expected
    assert summary.rows_read == len(JSONL_CORPUS)
    _assert_accounting(conn, summary)
    skewed = conn.execute("select ts > received_at from raw.events where event_id = 'skew'").fetchone()
    assert skewed == (True,)
    extra = conn.execute("select extra from raw.events where event_id = 'extra'").fetchone()[0]
    assert json.loads(extra) == {"sdk": {"name": "web", "build": 7}}
    assert conn.execute("select max(strlen(raw)) from raw.quarantine").fetchone()[0] <= 4096


def test_non_utf8_lines_are_quarantined_and_good_lines_of_the_file_load(tmp_path, registry):
    raw = tmp_path / "raw"
    lines = [metric("g1").encode(), b'{"event_id": "bad", "note": "\xff\xfe"}', metric("g2").encode(),
             metric("g3", note="caf\u00e9").encode()]
    (_folder(raw) / "mixed.jsonl.gz").write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    conn = duckdb.connect()
    summary = ingest_partition(conn, raw, DAY, registry)
    assert _reasons(conn, "mixed.jsonl.gz") == {2: "encoding"}
    assert sorted(r[0] for r in conn.execute("select event_id from raw.events").fetchall()) == ["g1", "g2", "g3"]
    assert summary.files[0].warning and not summary.files[0].error
    _assert_accounting(conn, summary)


def test_whole_file_problems_give_one_row_each_and_the_partition_still_loads(tmp_path, registry):
    raw = tmp_path / "raw"
    folder = _folder(raw)
    (folder / "a_good.jsonl").write_text(metric("g1") + "\n")
    (folder / "b_empty.jsonl").write_bytes(b"")
    (folder / "c_blank.jsonl.gz").write_bytes(gzip.compress(b"\n\n"))
    (folder / "d_junk.jsonl").write_bytes(bytes(range(256)) * 50)
    (folder / "e_notgzip.jsonl.gz").write_bytes(b"this is not gzip at all")
    (folder / "f_bad.parquet").write_bytes(b"PAR1 not really")
    good = "\n".join(metric(f"t{i}") for i in range(2000)) + "\n"
    (folder / "g_trunc.jsonl.gz").write_bytes(gzip.compress(good.encode())[:3000])
    conn = duckdb.connect()
    summary = ingest_partition(conn, raw, DAY, registry)
    by_file = {f.path.rsplit("/", 1)[1]: f for f in summary.files}
    reasons = dict(conn.execute("select regexp_extract(source_file, '[^/]+$'), string_agg(distinct reason) "
                                "from raw.quarantine group by 1").fetchall())
    assert reasons["b_empty.jsonl"] == "empty_file" and reasons["c_blank.jsonl.gz"] == "empty_file"
    assert reasons["d_junk.jsonl"] == "unreadable_file"
    assert reasons["e_notgzip.jsonl.gz"] == "unreadable_file"
    assert reasons["f_bad.parquet"] == "unreadable_file"
    for name in ("b_empty.jsonl", "c_blank.jsonl.gz", "d_junk.jsonl", "e_notgzip.jsonl.gz", "f_bad.parquet"):
        assert (by_file[name].rows_read, by_file[name].rows_quarantined) == (1, 1), name
        assert by_file[name].error
    trunc = by_file["g_trunc.jsonl.gz"]
    assert reasons["g_trunc.jsonl.gz"] == "truncated_file" and trunc.error and trunc.rows_accepted > 0
    assert trunc.rows_quarantined == 1
    assert by_file["a_good.jsonl"].rows_accepted == 1
    _assert_accounting(conn, summary)


def test_csv_and_parquet_go_through_the_same_rules(tmp_path, registry):
    raw = tmp_path / "raw"
    folder = _folder(raw, source="batch_export")
    # CSV with schema drift: an extra column and no `session_id`/`cell_id`/`hash_version` columns
    csv_rows = [
        "event_id,event_type,ts,received_at,unit_id,device_id,seq,experiment_id,assignment,metric,value,context,campaign",
        'c1,exposure,2026-11-02T10:00:00Z,2026-11-02T10:00:01Z,u1,d1,1,pricing_abn,"{""pricing_banner"": ""discount""}",,,"{""ua"": ""x""}",spring',
        "c2,metric,2026-11-02T10:01:00Z,,u1,d1,2,,,signup,1,,",
        "c3,metric,2026-11-02T10:01:00Z,,u1,d1,x7,,,signup,1,,",
        "c4,metric,2026-11-02T10:01:00Z,,u1,d1,3,,,revenue,nan,,",
        "c5,metric,not-a-time,,u1,d1,4,,,signup,1,,",
        ",metric,2026-11-02T10:01:00Z,,u1,d1,5,,,signup,1,,",
        'c7,exposure,2026-11-02T10:00:00Z,,u1,d1,6,pricing_abn,"{""pricing_banner"": ""gold""}",,,,',
    ]
    (folder / "export.csv").write_text("\n".join(csv_rows) + "\n")
    table = pa.table({
        "event_id": ["p1", "p2", "p3", None],
        "event_type": ["metric", "exposure", "metric", "metric"],
        "ts": pa.array([1793527200000, 1793527200000, 1793527200000, 1793527200000], pa.timestamp("ms")),
        "unit_id": ["u2", "u2", "u2", "u2"],
        "seq": pa.array([1, 2, 3, 4], pa.int64()),
        "experiment_id": [None, "pricing_abn", None, None],
        "assignment": [None, '{"pricing_banner": "control"}', None, None],
        "metric": ["revenue", None, "revenue", "revenue"],
        "value": [12.5, None, float("inf"), 1.0],
        "context": pa.array([{"device": "mobile", "email": "a@b.io"}, None, None, None],
                            pa.struct([("device", pa.string()), ("email", pa.string())])),
    })
    pq.write_table(table, folder / "export.parquet")
    conn = duckdb.connect()
    summary = ingest_partition(conn, raw, DAY, registry)
    assert _reasons(conn, "export.csv") == {4: "bad_type:seq", 5: "non_finite_value", 6: "bad_timestamp",
                                            7: "missing_required:event_id", 8: "unknown_level"}
    assert _reasons(conn, "export.parquet") == {3: "non_finite_value", 4: "missing_required:event_id"}
    rows = {r[0]: r[1:] for r in conn.execute(
        "select event_id, seq, value, extra, assignment, context, pii_email from raw.events").fetchall()}
    assert set(rows) == {"c1", "c2", "p1", "p2"}
    assert json.loads(rows["c1"][2]) == {"campaign": "spring"} and json.loads(rows["c1"][3]) == {"pricing_banner": "discount"}
    assert rows["c2"][:2] == (2, 1.0)
    assert rows["p1"][1] == 12.5 and "[redacted:email]" in rows["p1"][4] and rows["p1"][5] == 1
    assert conn.execute("select ts from raw.events where event_id = 'p1'").fetchone()[0].isoformat() == "2026-11-01T10:00:00"
    _assert_accounting(conn, summary)


def test_duplicates_with_different_payloads_are_kept_for_dbt_to_resolve(tmp_path, registry):
    raw = tmp_path / "raw"
    (_folder(raw) / "dups.jsonl").write_text("\n".join([metric("d1"), metric("d1"), metric("d1", value=7)]) + "\n")
    conn = duckdb.connect()
    ingest_partition(conn, raw, DAY, registry)
    hashes = [r[0] for r in conn.execute("select payload_hash from raw.events order by line_number").fetchall()]
    assert len(hashes) == 3 and hashes[0] == hashes[1] != hashes[2]


def test_reingest_is_identical_and_manifest_makes_unchanged_a_noop(tmp_path, registry):
    raw = tmp_path / "raw"
    folder = _folder(raw)
    data = ("\n".join(line for line, _ in JSONL_CORPUS[:12]) + "\n").encode()
    (folder / "a.jsonl.gz").write_bytes(gzip.compress(data))
    (folder / "b.jsonl").write_text(metric("b1") + "\n")
    conn = duckdb.connect()

    def snapshot():
        return [conn.execute(f"select * exclude (ingested_at) from {t} order by all").fetchall()
                for t in ("raw.events", "raw.quarantine")]

    first = ingest_partition(conn, raw, DAY, registry)
    tables = snapshot()
    again = ingest_partition(conn, raw, DAY, registry)
    assert again.skipped_unchanged and not first.skipped_unchanged
    assert (again.rows_read, again.rows_accepted, again.rows_quarantined) == (
        first.rows_read, first.rows_accepted, first.rows_quarantined)
    forced = ingest_partition(conn, raw, DAY, registry, force=True)
    assert not forced.skipped_unchanged and snapshot() == tables
    (folder / "b.jsonl").write_text(metric("b1") + "\n" + metric("b2") + "\n")  # changed file
    changed = ingest_partition(conn, raw, DAY, registry)
    assert not changed.skipped_unchanged and changed.rows_accepted == first.rows_accepted + 1
    (folder / "b.jsonl").unlink()  # removed file
    removed = ingest_partition(conn, raw, DAY, registry)
    assert not removed.skipped_unchanged
    assert conn.execute("select count(*) from raw.events where source_file like '%b.jsonl'").fetchone()[0] == 0
    assert conn.execute("select count(*) from raw.ingest_log").fetchone()[0] == 1
