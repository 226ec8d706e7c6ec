"""Data-quality metrics recover the simulator's truth, and their GX suites pass on clean data and
fail on data built to fail them."""

import json

import duckdb
import pandas as pd
import pytest

from mvt_pipeline.ingest import ingest_partition
from mvt_pipeline.ingest.dump_folders import dump_days
from mvt_pipeline.quality import telemetry_metrics as tm
from mvt_pipeline.quality.gx_runner import run_suite
from mvt_pipeline.quality.metric_suites import save_validation, validate_metric
from mvt_pipeline.quality.telemetry_suite import build_telemetry_suite, sample_sql
from mvt_pipeline.registry import load_registry
from mvt_pipeline.simulate import Faults, SimulationConfig, simulate

from .conftest import SAMPLE_REGISTRY


@pytest.fixture(scope="module")
def registry():
    return load_registry(SAMPLE_REGISTRY)


def _ingest_sim(tmp_path, registry, faults, users=4000, days=3, seed=11):
    truth = simulate(registry, SimulationConfig(users=users, days=days, seed=seed, faults=faults), tmp_path,
                     log=lambda *a: None)
    conn = duckdb.connect()
    for day in dump_days(tmp_path / "raw"):
        ingest_partition(conn, tmp_path / "raw", day, registry)
    return conn, truth


@pytest.fixture(scope="module")
def lossy(tmp_path_factory, registry):
    faults = Faults(loss_rate=0.02, duplicate_rate=0.03, late_rate=0.01, pii_rate=0.002, malformed_rate=0.001)
    return _ingest_sim(tmp_path_factory.mktemp("lossy"), registry, faults, users=6000)


@pytest.fixture(scope="module")
def clean(tmp_path_factory, registry):
    return _ingest_sim(tmp_path_factory.mktemp("clean"), registry, Faults(), users=1500, days=2, seed=5)


def test_loss_rate_recovers_the_simulated_loss_within_0_2_pp(lossy):
    conn, truth = lossy
    c = truth["counts"]
    true_rate = c["lost"] / c["events_generated"]
    metric = tm.loss_rate(conn, None)
    assert abs(metric.value - true_rate) < 0.002, (metric.value, true_rate)
    assert metric.status == tm.ERROR and {r["source"] for r in metric.per_source} == set(truth["sources"])
    outcome = validate_metric(metric)
    assert outcome is not None and not outcome.success
    assert outcome.failed[0]["column"] == "loss_rate_lower"  # the suite judges the rate's lower bound


def test_duplicates_and_pii_are_counted(lossy):
    conn, truth = lossy
    days = [r[0] for r in conn.execute("select distinct dt::varchar from raw.events order by 1").fetchall()]
    rates = [tm.duplicate_rate(conn, d) for d in days]
    assert all(r.details["conflicting_ids"] == 0 for r in rates)  # simulated retries are exact copies
    total_dups = sum(r.details["events"] - r.details["unique_ids"] for r in rates)
    cross_day = truth["counts"]["duplicates"] - total_dups
    assert 0 <= cross_day < truth["counts"]["duplicates"] * 0.05  # a retry rarely crosses midnight
    pii = {"email": 0, "phone": 0, "ipv4": 0, "ipv6": 0, "card": 0}
    for d in days:
        for k, v in tm.pii_counts_by_kind(conn, d).details["by_kind"].items():
            pii[k] += v
    want = truth["counts"]["pii_by_kind"]
    assert pii == {"email": want["email"], "phone": want["phone"], "ipv4": want["ip"], "ipv6": 0, "card": 0}


def test_clean_data_passes_every_metric_and_suite(clean, registry, tmp_path):
    conn, _truth = clean
    day = conn.execute("select min(dt)::varchar from raw.events").fetchone()[0]
    metrics = tm.all_metrics(conn, day)
    statuses = {name: m.status for name, m in metrics.items()}
    assert statuses == {name: tm.OK for name in metrics}, statuses
    assert metrics["loss_rate"].value == 0 and metrics["duplicate_rate"].value == 0
    for m in metrics.values():
        outcome = validate_metric(m)
        if outcome is not None:
            assert outcome.success, (m.name, outcome.failed)
    sample = conn.execute(sample_sql(), [day]).df()
    schema = run_suite(sample, build_telemetry_suite(registry))
    assert schema.success, schema.failed
    save_validation(conn, day, "telemetry_schema", schema)
    save_validation(conn, day, "telemetry_schema", schema)
    stored = conn.execute("select count(*), any_value(result) from analysis.gx_validations").fetchone()
    assert stored[0] == 1 and "results" in json.loads(stored[1])


def _events_table(conn, rows):
    """A minimal raw.events/ingest_log built to trip one metric at a time."""
    from mvt_pipeline.ingest import ensure_raw_schema

    ensure_raw_schema(conn)
    frame = pd.DataFrame(rows)
    conn.register("_rows", frame)
    conn.execute("""insert into raw.events (event_id, event_type, ts, received_at, unit_id, device_id, seq, context,
                    pii_redactions, payload_hash, source, source_file, line_number, dt, ingested_at)
                    select event_id, 'metric', ts, received_at, unit_id, 'dev', seq, context::json, 0, payload_hash,
                           'web_sdk', 'f', row_number() over (), dt::date, now()::timestamp from _rows""")


def test_lag_duplicates_bots_and_volume_fail_when_built_to(tmp_path):
    # 2000 rows / 3000 lines: the rate metrics judge a source only from Thresholds.min_sample (1000)
    # trials on (smaller sources are "too few to judge": test_gate_bounds.py)
    conn = duckdb.connect()
    base = pd.Timestamp("2026-11-02 10:00:00")
    rows = []
    for i in range(2000):
        rows.append({"event_id": f"e{i % 1500}", "ts": base, "received_at": base + pd.Timedelta(hours=2),
                     "unit_id": f"bot{i}" if i < 300 else f"u{i}", "seq": i, "payload_hash": str(i),
                     "context": json.dumps({"user_agent": "Googlebot/2.1" if i < 300 else "Mozilla/5.0"}),
                     "dt": "2026-11-02"})
    _events_table(conn, rows)
    lag = tm.lag_p95(conn, "2026-11-02")
    assert lag.status == tm.ERROR and lag.value == pytest.approx(7200)
    assert not validate_metric(lag).success
    dup = tm.duplicate_rate(conn, "2026-11-02")
    assert dup.status == tm.WARN and dup.value == pytest.approx(0.25) and dup.details["conflicting_ids"] == 500
    assert not validate_metric(dup).success
    bots = tm.bot_share(conn, "2026-11-02")
    assert bots.status == tm.WARN and bots.per_source[0]["bot_units"] == 300
    for day, n in [("2026-10-2%d" % d, 1000) for d in range(5, 10)] + [("2026-11-02", 3000)]:
        conn.execute("insert into raw.ingest_log (path, source, dt, size_bytes, sha256, rows_read, rows_accepted, "
                     "rows_quarantined, pii_redactions, ingested_at) values (?, 'web_sdk', ?::date, 1, 'x', ?, ?, ?, 0, "
                     "now()::timestamp)", [f"f{day}", day, n, int(n * 0.8), n - int(n * 0.8)])
    vol = tm.volume_change_vs_trailing_7d(conn, "2026-11-02")
    assert vol.status == tm.WARN and vol.value == pytest.approx(2.0)
    assert not validate_metric(vol).success
    quarantine = tm.quarantine_rate(conn, "2026-11-02")
    assert quarantine.status == tm.ERROR and quarantine.value == pytest.approx(0.2)
    assert not validate_metric(quarantine).success
    first_week = tm.volume_change_vs_trailing_7d(conn, "2026-10-25")
    assert first_week.status == tm.OK and first_week.details["note"]


def test_schema_suite_fails_on_rows_built_to_fail(registry):
    frame = pd.DataFrame({
        "event_id": ["a", None], "event_type": ["exposure", "click"], "ts": pd.to_datetime(["2026-11-02"] * 2),
        "unit_id": ["u", "v"], "experiment_id": ["pricing_abn", "ghost"], "seq": [1, -4],
        "pii_redactions": [0, 0], "lag_seconds": [1.0, 2.0],
    })
    outcome = run_suite(frame, build_telemetry_suite(registry))
    failed = {(f["expectation"], f["column"]) for f in outcome.failed}
    assert not outcome.success
    assert {("expect_column_values_to_not_be_null", "event_id"), ("expect_column_values_to_be_in_set", "event_type"),
            ("expect_column_values_to_be_in_set", "experiment_id"), ("expect_column_values_to_be_between", "seq")} <= failed


def _events(source: str, events: list[dict], root, day="2026-11-02"):
    folder = root / "raw" / source / f"dt={day}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "e.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))


def test_loss_without_seq_is_not_measurable_never_green(tmp_path, registry):
    base = {"event_type": "metric", "ts": "2026-11-02T10:05:00Z", "unit_id": "u1", "metric": "signup", "value": 1}
    # an SDK that sends no seq (GrowthBook, Segment, OpenTelemetry do not)
    _events("growthbook_sdk", [{**base, "event_id": f"g{i}", "unit_id": f"u{i}"} for i in range(50)], tmp_path)
    conn = duckdb.connect()
    ingest_partition(conn, tmp_path / "raw", "2026-11-02", registry)
    only = tm.loss_rate(conn, "2026-11-02")
    assert only.status == tm.WARN and only.value is None
    assert only.details["not_measurable"] == {"growthbook_sdk": tm.LOSS_NO_SEQ}
    (row,) = only.per_source
    assert row["verdict"] == tm.NOT_MEASURABLE and row["events"] == 50 and row["sequenced_events"] == 0

    # beside a sequenced source with no loss: that one is judged, the other still says not measurable
    seq = [{**base, "event_id": f"w{i}", "device_id": f"d{i // 10}", "seq": i % 10} for i in range(40)]
    seq.append({**base, "event_id": "single", "device_id": "lonely", "seq": 7})  # one event: no interior
    _events("web_sdk", seq, tmp_path)
    ingest_partition(conn, tmp_path / "raw", "2026-11-02", registry, force=True)
    both = tm.loss_rate(conn, "2026-11-02")
    rows = {r["source"]: r for r in both.per_source}
    assert both.status == tm.WARN and both.value == 0.0
    assert rows["web_sdk"]["interior"] == 4 * 8 and rows["web_sdk"]["lost"] == 0  # (10 - 2) per device, the single 0
    assert rows["growthbook_sdk"]["verdict"] == tm.NOT_MEASURABLE
    assert both.details["not_measurable"] == {"growthbook_sdk": tm.LOSS_NO_SEQ}
