"""Hostile lines are data (#19 part 5): each lands in quarantine with its reason while the rest of
its file loads, ingestion never raises on them, and dbt still builds after them. Every case runs
under a signal.alarm timeout."""

from __future__ import annotations

import json
import signal
from contextlib import contextmanager

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings as hyp_settings, strategies as st

from mvt_pipeline.ingest import ingest_partition
from mvt_pipeline.ingest.fast_path_sql import observed_shapes
from mvt_pipeline.ingest.manifest import registry_cell_texts, registry_levels
from mvt_pipeline.ingest.validation_sql import checked_select_sql
from mvt_pipeline.registry import load_registry

from .conftest import SAMPLE_REGISTRY
from .test_ingest_corpus import DAY, EXPOSURE, METRIC
from .test_ingest_fast_path import _fast_and_general, compact

DEEP = 10_000


@contextmanager
def time_limit(seconds: int):
    """Fail (instead of hanging the suite) when the block runs longer than `seconds`."""
    def _raise(_sig, _frame):
        raise TimeoutError(f"took more than {seconds} s")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def m(event_id, **kw) -> str:
    return compact({**METRIC, "event_id": event_id, **kw})


def deep_line(event_id: str, depth: int = DEEP) -> str:
    return m(event_id)[:-1] + ',"context":' + '{"a":' * depth + "1" + "}" * depth + "}"


# (line, reason): each hostile case of #19, and the near misses that must still load
HOSTILE = [
    (deep_line("deep"), "too_deep"),
    (m("deep-arr")[:-1] + ',"blob":' + "[" * DEEP + "]" * DEEP + "}", "too_deep"),
    (deep_line("deep-32", 31), None),  # the line is 32 deep: the limit, accepted
    (deep_line("deep-33", 32), "too_deep"),
    (m("dup")[:-1] + ',"unit_id":"u2"}', "duplicate_key"),
    (m("dup-extra", sdk=1)[:-1] + ',"sdk":2}', "duplicate_key"),
    (m("seq-max", seq=2**63 - 1), "bad_value:seq"),
    (m("seq-neg", seq=-1), "bad_value:seq"),
    (m("seq-over", seq=2**64), "bad_value:seq"),
    (m("seq-2^53", seq=2**53), "bad_value:seq"),
    (m("seq-safe", seq=2**53 - 1), None),
    (m("ts-huge", ts="294247-01-01T00:00:00Z"), "bad_timestamp"),
    (m("ts-old", ts="1969-12-31T23:59:59Z", received_at="1970-01-01T00:00:00Z"), "bad_timestamp"),
    (m("ts-2100", ts="2100-01-01T00:00:00Z", received_at="2100-01-01T00:00:01Z"), "bad_timestamp"),
    (m("ts-date", ts="2026-11-02"), "bad_timestamp"),
    (m("rcv-old", received_at="1969-01-01T00:00:00Z"), "bad_timestamp"),
    (m("rcv-date", received_at="2026-11-02"), "bad_timestamp"),
    (m("rcv-early", ts="2026-11-03T12:00:00Z", received_at="2026-11-02T11:00:00Z"), "received_before_ts"),
    (m("rcv-skew", ts="2026-11-02T20:00:00Z", received_at="2026-11-02T10:00:00Z"), None),  # 10 h: tolerated
    (m("metric-pii", metric="ann@example.com"), "pii_in_metric_name"),
    (m("metric-card", metric="4111 1111 1111 1111"), "pii_in_metric_name"),
    (m("metric-ok", metric="latency_ms"), None),
]


@pytest.fixture(scope="module")
def registry():
    return load_registry(SAMPLE_REGISTRY)


def _write(tmp_path, lines, name="hostile.jsonl"):
    folder = tmp_path / "raw" / "web_sdk" / f"dt={DAY}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("\n".join(lines) + "\n")
    return tmp_path / "raw"


def test_each_hostile_line_gets_its_reason_and_the_file_loads(tmp_path, registry):
    good = [m(f"g{i}", seq=10 + i) for i in range(5)]
    lines = good[:2] + [line for line, _ in HOSTILE] + good[2:]
    conn = duckdb.connect()
    with time_limit(60):
        summary = ingest_partition(conn, _write(tmp_path, lines), DAY, registry)
    got = dict(conn.execute("select line_number, reason from raw.quarantine").fetchall())
    assert got == {i + 3: reason for i, (_, reason) in enumerate(HOSTILE) if reason}
    accepted = {r[0] for r in conn.execute("select event_id from raw.events").fetchall()}
    assert accepted == {f"g{i}" for i in range(5)} | {json.loads(line)["event_id"] for line, r in HOSTILE if not r}
    assert not summary.mismatched_files and summary.rows_read == len(lines)
    # the quarantine keeps a redacted line, cut to 4 KiB
    raws = dict(conn.execute("select line_number, raw from raw.quarantine").fetchall())
    assert all(len(r) <= 4096 for r in raws.values())
    assert not any("ann@example.com" in r or "4111 1111 1111 1111" in r for r in raws.values())


def test_fast_path_and_general_path_agree_on_hostile_lines():
    lines = [line for line, _ in HOSTILE] + [compact(EXPOSURE), compact(METRIC)]
    with time_limit(60):
        pending, both, general = _fast_and_general(lines)
    assert both == general
    assert [row[2] for row in general[:len(HOSTILE)]] == [reason for _, reason in HOSTILE]
    assert not pending[-1] and not pending[-2]  # canonical lines still take the fast path


def test_shape_sampling_never_raises_on_deep_lines():
    with time_limit(20):
        shapes = observed_shapes([deep_line("d"), "[" * DEEP, '{"a":' * 5000, compact(METRIC)])
    assert shapes


def test_quarantine_keeps_the_original_only_when_the_operator_opts_in(tmp_path, registry, monkeypatch):
    lines = [m("q", metric="ann@example.com")]
    conn = duckdb.connect()
    ingest_partition(conn, _write(tmp_path, lines), DAY, registry)
    assert "[redacted:email]" in conn.execute("select raw from raw.quarantine").fetchone()[0]
    monkeypatch.setenv("MVT_QUARANTINE_KEEP_PII", "1")
    ingest_partition(conn, _write(tmp_path, lines), DAY, registry, force=True)
    assert "ann@example.com" in conn.execute("select raw from raw.quarantine").fetchone()[0]


def test_dbt_builds_after_hostile_lines(tmp_path):
    from .test_dbt_marts import Events, dbt, ingest, one, write_registry

    data = tmp_path / "data"
    write_registry(data)
    ev = Events()
    ev.exposure("u1", "2026-01-10T10:00:00", fa="a0", fb="b0", seq=1)
    ev.metric("u1", "2026-01-10T11:00:00", "buy", 1, seq=2)
    ev.write(data / "raw")
    folder = data / "raw" / "web_sdk" / "dt=2026-01-10"
    base = {"event_type": "metric", "unit_id": "u1", "device_id": "d_u1", "metric": "buy", "value": 1}
    hostile = [
        json.dumps({**base, "event_id": "h1", "ts": "2026-01-10T12:00:00Z", "seq": 2**63 - 1}),
        json.dumps({**base, "event_id": "h2", "ts": "294247-01-01T00:00:00Z", "event_type": "exposure",
                    "experiment_id": "exp_ab", "assignment": {"fa": "a1", "fb": "b1"}}),
        json.dumps({**base, "event_id": "h3", "ts": "2026-01-10T12:00:00Z", "seq": -1}),
        deep_line("h4").replace('"ts":"2026-11-02T10:05:00Z"', '"ts":"2026-01-10T12:00:00Z"'),
    ]
    (folder / "hostile.jsonl").write_text("\n".join(hostile) + "\n")
    with time_limit(240):
        ingest(data)
        dbt(data, "build", "--select", "stg_events+", "--indirect-selection", "cautious")
    assert one(data, "select count(*) from raw.quarantine where source_file like '%hostile.jsonl'") == 4
    assert one(data, "select count(*) from marts.fct_exposures where unit_id = 'u1'") == 1


# --- property: random JSON objects and strings ------------------------------------------------

_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
_json = st.recursive(_scalars, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids,
                                                                                           max_size=3), max_leaves=8)
_field_values = {
    "event_id": st.one_of(st.text(max_size=8), st.integers()), "event_type": st.sampled_from(["metric", "exposure", "x"]),
    "ts": st.sampled_from(["2026-11-02T10:00:00Z", "2026-11-02", "294247-01-01T00:00:00Z", "x", "1999-01-01T00:00:00Z"]),
    "received_at": st.sampled_from(["2026-11-02T10:00:01Z", "2026-10-01T00:00:00Z", "soon"]),
    "unit_id": st.one_of(st.text(max_size=8), st.sampled_from(["ann@example.com", "::ffff:198.51.100.9"])),
    "seq": st.one_of(st.integers(min_value=-2**64, max_value=2**64), st.floats(allow_nan=False)),
    "metric": st.one_of(st.text(max_size=8), st.just("4111111111111111")), "value": _json,
    "experiment_id": st.sampled_from(["pricing_abn", "ghost"]), "assignment": _json, "context": _json,
}
_objects = st.fixed_dictionaries({}, optional={**_field_values, "extra": _json})
_lines = st.lists(st.one_of(_objects.map(compact), _objects.map(json.dumps), st.text(max_size=40),
                            _json.map(compact)), min_size=1, max_size=12)
_KNOWN_REASONS = ("malformed_json", "too_deep", "duplicate_key", "missing_required:", "bad_type:", "bad_value:seq",
                  "bad_timestamp", "received_before_ts", "unknown_experiment", "unknown_level",
                  "pii_in_metric_name", "non_finite_value", "oversized_line", "encoding")


@hyp_settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_lines)
def test_random_lines_are_accepted_or_quarantined_with_a_known_reason(lines):
    lines = [line.replace("\n", " ").replace("\r", " ") for line in lines]
    with time_limit(30):
        pending, both, general = _fast_and_general(lines)
    assert both == general
    nonblank = [x for x in lines if x.startswith("{") or x.strip(" ")]  # DuckDB trim: spaces
    assert len(general) == len(nonblank)
    for row in general:
        reason, reasons = row[2], row[3]
        assert reason is None or reason.startswith(_KNOWN_REASONS), reason
        # every problem listed once, the primary first; none on an accepted line
        assert (reasons is None) == (reason is None)
        if reasons:
            assert reasons[0] == reason and len(set(reasons)) == len(reasons), reasons
            assert all(r.startswith(_KNOWN_REASONS) for r in reasons), reasons


def test_a_quarantined_line_lists_every_problem_primary_first(tmp_path, registry):
    """A line with several problems (what an SDK with another shape sends): all are listed, so the
    SDK team fixes them in one round; the primary `reason` stays the first, for the counts."""
    lines = [
        # no event_id, a date with no time, an empty unit, an experiment the registry does not hold
        compact({"event_type": "exposure", "ts": "2026-11-02", "unit_id": "", "experiment_id": "ghost",
                 "assignment": {"a": "x"}}),
        # a negative seq and a value that is not a number
        m("two", seq=-1, value="12"),
        # a bad unit id type, a bad context, and a PII metric name
        m("three", unit_id=["u"], context="web", metric="ann@example.com"),
        "{not json",
        m("good", seq=3),
    ]
    conn = duckdb.connect()
    with time_limit(60):
        ingest_partition(conn, _write(tmp_path, lines), DAY, registry)
    got = {n: (reason, reasons) for n, reason, reasons in
           conn.execute("select line_number, reason, reasons from raw.quarantine order by 1").fetchall()}
    assert got == {
        1: ("missing_required:event_id", ["missing_required:event_id", "bad_timestamp", "missing_required:unit_id",
                                          "unknown_experiment"]),
        2: ("bad_value:seq", ["bad_value:seq", "bad_type:value"]),
        3: ("bad_type:unit_id", ["bad_type:unit_id", "bad_type:context", "pii_in_metric_name"]),
        4: ("malformed_json", ["malformed_json"]),
    }
    # the check's metadata counts every problem, not only the primary reasons
    from mvt_pipeline.quality.telemetry_metrics import quarantine_rate

    details = quarantine_rate(conn, DAY).details
    assert details["reasons"] == {"missing_required:event_id": 1, "bad_value:seq": 1, "bad_type:unit_id": 1,
                                  "malformed_json": 1}
    assert details["problems"]["bad_type:value"] == 1 and details["problems"]["unknown_experiment"] == 1
    example = {e["reason"]: e["all_reasons"] for e in details["examples"]}
    assert example["bad_value:seq"] == "bad_value:seq, bad_type:value"

