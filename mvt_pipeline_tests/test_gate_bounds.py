"""Rate gates with a sample size (issue #19): the one-sided bounds against scipy and statsmodels, the
loss / flip gates on the mart frames and as Dagster checks, the ingestion rate metrics, the
deterministic Monte Carlo of analysis.cell_bayes, and dq_daily's sequence arithmetic on rows whose
seq is far outside the ingestion contract (old rows)."""

from __future__ import annotations

import datetime as dt
import itertools

import duckdb
import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest
from statsmodels.stats.proportion import proportion_confint

from mvt_pipeline.quality import rate_bounds as rb
from mvt_pipeline.quality import telemetry_metrics as tm
from mvt_pipeline.quality.mart_gates import flip_status, judge_flips, matured_days, too_few
from mvt_pipeline.quality.metric_suites import validate_metric
from mvt_pipeline.quality.telemetry_metrics import Thresholds

# --- the bounds -----------------------------------------------------------------------------------

_NS = [1, 2, 3, 5, 10, 17, 50, 100, 284, 287, 1000, 1011, 10_000, 123_457]
CASES = sorted({(k, n) for n in _NS for k in {0, 1, 2, 3, n // 100, n // 10, n // 3, n // 2, n - 1, n} if 0 <= k <= n})


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_bounds_match_scipy_and_statsmodels(confidence):
    alpha = 2 * (1 - confidence)  # a one-sided bound is one end of the two-sided 1 - alpha interval
    for (k, n), (method, sm_method) in itertools.product(CASES, [("exact", "beta"), ("wilson", "wilson")]):
        low, high = rb.lower_bound(k, n, confidence, method), rb.upper_bound(k, n, confidence, method)
        ci = binomtest(k, n).proportion_ci(confidence_level=1 - alpha, method=method)
        sm_low, sm_high = proportion_confint(k, n, alpha=alpha, method=sm_method)
        # scipy's exact interval is found by root finding (about 1e-11), statsmodels' by the Beta quantile
        assert low == pytest.approx(ci.low, rel=1e-8, abs=1e-12), (k, n, method)
        assert high == pytest.approx(ci.high, rel=1e-8, abs=1e-12), (k, n, method)
        assert low == pytest.approx(sm_low, rel=1e-9, abs=1e-12), (k, n, method)
        assert high == pytest.approx(sm_high, rel=1e-9, abs=1e-12), (k, n, method)
        assert 0.0 <= low <= k / n <= high <= 1.0
    assert len(CASES) > 100


def test_bound_edges():
    assert rb.lower_bound(0, 1000) == 0.0 and rb.upper_bound(1000, 1000) == 1.0
    assert rb.lower_bound(0, 0) == 0.0 and rb.upper_bound(0, 0) == 1.0
    # exact k = n: lower = (1 - confidence) ** (1 / n); k = 0: upper = 1 - (1 - confidence) ** (1 / n)
    assert rb.lower_bound(20, 20) == pytest.approx(0.05 ** (1 / 20), rel=1e-12)
    assert rb.upper_bound(0, 20) == pytest.approx(1 - 0.05 ** (1 / 20), rel=1e-12)
    assert rb.lower_bound(30, 1000, method="exact") < rb.lower_bound(30, 1000, method="wilson")
    for bad in [(-1, 10), (11, 10), (1, -1)]:
        with pytest.raises(ValueError):
            rb.lower_bound(*bad)
    with pytest.raises(ValueError):
        rb.lower_bound(1, 10, confidence=1.0)
    with pytest.raises(ValueError):
        rb.lower_bound(1, 10, method="normal")


def test_exact_bound_covers_at_least_its_confidence():
    """Clopper-Pearson's guarantee, checked by simulation: the 95 % lower bound lies above the
    true rate in at most 5 % of samples (here at a rate right at the 1 % loss threshold)."""
    rng = np.random.default_rng(19)
    n, p = 2000, 0.01
    ks = rng.binomial(n, p, size=4000)
    above = np.mean([rb.lower_bound(int(k), n) > p for k in ks])
    assert above <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / len(ks))


def test_judge_rate_needs_the_sample_and_the_bound():
    t = Thresholds()
    assert (t.min_sample, t.confidence, t.bound_method) == (1000, 0.95, "exact")
    kw = {"min_sample": t.min_sample, "confidence": t.confidence}
    few = rb.judge_rate(3, 287, 0.01, **kw)
    assert few.verdict == rb.TOO_FEW and few.lower is None and not few.failed and few.rate > 0.01
    assert rb.judge_rate(300, 10_000, 0.01, **kw).failed
    borderline = rb.judge_rate(11, 1000, 0.01, **kw)
    assert borderline.verdict == rb.PASS and borderline.rate > 0.01 > borderline.lower
    assert rb.judge_rate(None, float("nan"), 0.01, **kw).verdict == rb.TOO_FEW
    assert rb.graded(150, 1000, 0.01, 0.10, **kw)[0] == "ERROR"
    assert rb.graded(50, 1000, 0.01, 0.10, **kw)[0] == "WARN"
    assert rb.graded(12, 1000, 0.01, 0.10, **kw)[0] == "OK"
    status, v = rb.graded(500, 900, 0.01, 0.10, **kw)
    assert status == "OK" and v.verdict == rb.TOO_FEW


# --- the loss gate on dq_daily ----------------------------------------------------------------

START = dt.date(2026, 11, 1)
NIGHT = START + dt.timedelta(days=5)  # every day below is matured (late window: 2 days)


def _dq_daily(rows):
    """dq_daily as store.daily_loss returns it: dt, n_sequenced, n_lost, loss_rate = lost / (seq + lost)."""
    frame = pd.DataFrame(rows, columns=["n_sequenced", "n_lost"])
    frame.insert(0, "dt", pd.to_datetime([START + dt.timedelta(days=i) for i in range(len(frame))]))
    frame["loss_rate"] = frame["n_lost"] / (frame["n_sequenced"] + frame["n_lost"])
    return frame


@pytest.mark.parametrize("n_sequenced, n_lost, verdict", [
    (284, 3, rb.TOO_FEW),    # the night of issue #19: 1.05 % of 287 positions, far too few to judge
    (10_000, 300, rb.FAIL),  # 2.9 %, lower bound 2.6 %
    (989, 11, rb.PASS),      # 1.1 % of 1000: lower bound 0.6 %, not confidently above 1 %
    (9_800, 200, rb.FAIL),   # 2 % of 10,000: lower bound 1.8 %
    (99_000, 1_000, rb.PASS),  # exactly at the threshold never fails
])
def test_loss_gate_judges_a_day_with_its_sample(n_sequenced, n_lost, verdict):
    matured, bad = matured_days(_dq_daily([(n_sequenced, n_lost)]), NIGHT)
    (row,) = matured.to_dict("records")
    assert row["verdict"] == verdict and row["n"] == n_sequenced + n_lost
    assert row["threshold"] == Thresholds().loss_error and row["loss_rate"] == n_lost / (n_sequenced + n_lost)
    assert (row["lower_bound"] is None or np.isnan(row["lower_bound"])) == (verdict == rb.TOO_FEW)
    assert bad.empty == (verdict != rb.FAIL)


def test_loss_gate_reports_small_days_and_ignores_young_ones():
    days = _dq_daily([(284, 3), (10_000, 300), (989, 11), (20_000, 2_000)])  # the last is 2 days old
    matured, bad = matured_days(days, START + dt.timedelta(days=4))
    assert len(matured) == 3 and list(bad["n"]) == [10_300]
    assert list(too_few(matured)["n"]) == [287]
    stricter = Thresholds(min_sample=100)
    _, bad_small = matured_days(days, START + dt.timedelta(days=4), stricter)
    assert list(bad_small["n"]) == [10_300]  # 287 positions now judged: lower bound 0.29 % < 1 %


# --- the flip gate on dq_assignment -------------------------------------------------------------

def _flips(rows):
    frame = pd.DataFrame(rows, columns=["experiment_id", "flipped", "units"])
    frame["flip_rate"] = frame["flipped"] / frame["units"]
    return frame


@pytest.mark.parametrize("flipped, units, status", [
    (5, 1000, "OK"), (50, 1000, "WARN"), (150, 1000, "ERROR"),
    (12, 1000, "OK"),     # 1.2 %, lower bound 0.7 %
    (112, 1000, "WARN"),  # 11.2 % > 10 %, lower bound 9.6 %: not confidently above ERROR
    (50, 400, "OK"),      # 12.5 % of 400 units: too few to judge
])
def test_flip_gate_judges_each_experiment_with_its_sample(flipped, units, status):
    rates = _flips([("e", flipped, units), ("f", 0, 5000)])
    worst, got = flip_status(rates)
    assert worst == flipped / units and got == status
    judged = judge_flips(rates).set_index("experiment_id")
    assert judged.loc["f", "status"] == "OK"
    assert (judged.loc["e", "verdict"] == rb.TOO_FEW) == (units < Thresholds().min_sample)


# --- the Dagster checks themselves ----------------------------------------------------------------

def _check_warehouse(path, days, flips):
    with duckdb.connect(str(path)) as conn:
        conn.execute("create schema marts")
        if "n_events" not in days:
            days = days.assign(n_events=days["n_sequenced"])
        conn.register("_days", days.assign(day=days["dt"].dt.date))
        conn.execute("create table marts.dq_daily as select day, n_sequenced, n_lost, loss_rate, n_events from _days")
        conn.register("_flips", flips)
        conn.execute("create table marts.dq_assignment as select experiment_id, flipped as n_flipped, "
                     "units as n_exposed, 0 as n_bots from _flips")


@pytest.mark.parametrize("rows, passed", [
    ([(284, 3)], True),
    ([(284, 3), (989, 11)], True),
    ([(284, 3), (10_000, 300)], False),
])
def test_loss_rate_matured_check(tmp_path, monkeypatch, rows, passed):
    import dagster as dg
    from dagster_duckdb import DuckDBResource

    from mvt_pipeline.defs.assets import quality_gates

    _check_warehouse(tmp_path / "wh.duckdb", _dq_daily(rows), _flips([("e", 0, 10)]))
    # a direct invocation has no partition: the night comes from the partition key in a run
    monkeypatch.setattr(quality_gates, "night_of", lambda _context: NIGHT)
    result = quality_gates.loss_rate_matured(dg.build_asset_check_context(),
                                             duckdb=DuckDBResource(database=str(tmp_path / "wh.duckdb")))
    md = result.metadata
    assert result.passed is passed
    assert md["n_too_few_events_to_judge"].value == 1 and "too few events to judge" in md["too_few_events_to_judge"].value
    assert md["threshold"].value == 0.01 and md["min_sample"].value == 1000 and md["confidence"].value == 0.95
    for column in ("n", "loss_rate", "lower_bound", "threshold", "verdict"):
        assert column in md["per_day"].value
    assert result.severity == (dg.AssetCheckSeverity.WARN if passed else dg.AssetCheckSeverity.ERROR)
    assert md["n_not_measurable_days"].value == 0


def test_loss_rate_matured_check_warns_when_loss_is_not_measurable(tmp_path, monkeypatch):
    import dagster as dg
    from dagster_duckdb import DuckDBResource

    from mvt_pipeline.defs.assets import quality_gates

    days = _dq_daily([(284, 3), (0, 0)])
    days["n_events"] = [287, 4_000]  # the second day: an SDK that sends no seq
    _check_warehouse(tmp_path / "wh.duckdb", days, _flips([("e", 0, 10)]))
    monkeypatch.setattr(quality_gates, "night_of", lambda _context: NIGHT)
    result = quality_gates.loss_rate_matured(dg.build_asset_check_context(),
                                             duckdb=DuckDBResource(database=str(tmp_path / "wh.duckdb")))
    assert result.passed is False and result.severity == dg.AssetCheckSeverity.WARN  # never green, never blocking
    assert result.metadata["n_not_measurable_days"].value == 1 and "not measurable" in result.description


def test_flip_rate_check(tmp_path):
    from dagster_duckdb import DuckDBResource

    from mvt_pipeline.defs.assets.quality_gates import flip_rate

    _check_warehouse(tmp_path / "wh.duckdb", _dq_daily([(1000, 0)]),
                     _flips([("big", 150, 1000), ("small", 50, 100)]))
    result = flip_rate(duckdb=DuckDBResource(database=str(tmp_path / "wh.duckdb")))
    assert not result.passed and result.severity.value == "ERROR"
    assert "small" in result.metadata["too_few_units_to_judge"].value
    assert "lower_bound" in result.metadata["per_experiment"].value


# --- the ingestion rate metrics ---------------------------------------------------------------

def _raw(conn, n_rows, dup_share=0.0, bots=0, day="2026-11-02"):
    from mvt_pipeline.ingest import ensure_raw_schema

    ensure_raw_schema(conn)
    base = pd.Timestamp(f"{day} 10:00:00")
    frame = pd.DataFrame({
        "event_id": [f"e{i % round(n_rows * (1 - dup_share))}" for i in range(n_rows)],
        "ts": base, "received_at": base + pd.Timedelta(seconds=1),
        "unit_id": [f"bot{i}" if i < bots else f"u{i}" for i in range(n_rows)], "seq": np.arange(1, n_rows + 1),
        "payload_hash": 1, "context": ['{"user_agent": "Googlebot/2.1"}' if i < bots else "{}" for i in range(n_rows)],
        "dt": day})
    conn.register("_rows", frame)
    conn.execute("""insert into raw.events (event_id, event_type, ts, received_at, unit_id, device_id, seq, context,
                    pii_redactions, payload_hash, source, source_file, line_number, dt, ingested_at)
                    select event_id, 'metric', ts, received_at, unit_id, 'dev', seq, context::json, 0, payload_hash,
                           'web_sdk', 'f', row_number() over (), dt::date, now()::timestamp from _rows""")


def _ingest_log(conn, read, quarantined, day="2026-11-02"):
    conn.execute("insert into raw.ingest_log (path, source, dt, size_bytes, sha256, rows_read, rows_accepted, "
                 "rows_quarantined, pii_redactions, ingested_at) values ('f', 'web_sdk', ?::date, 1, 'x', ?, ?, ?, 0, "
                 "now()::timestamp)", [day, read, read - quarantined, quarantined])


def test_ingestion_rate_metrics_report_small_sources_instead_of_judging_them():
    conn = duckdb.connect()
    _raw(conn, 200, dup_share=0.25, bots=30)  # 25 % duplicates, 15 % bots (one unit per row)
    _ingest_log(conn, 300, 60)  # 20 % quarantined of 300 lines
    for metric in (tm.duplicate_rate(conn, "2026-11-02"), tm.bot_share(conn, "2026-11-02"),
                   tm.quarantine_rate(conn, "2026-11-02")):
        assert metric.status == tm.OK, metric.name
        assert metric.details["too_few_to_judge"] == ["web_sdk"] and metric.details["min_sample"] == 1000
        assert metric.per_source[0]["verdict"] == rb.TOO_FEW and metric.per_source[0][f"{metric.name}_lower"] is None
        outcome = validate_metric(metric)
        assert outcome.success, (metric.name, outcome.failed)  # the suite skips what is not judged


def test_ingestion_rate_metrics_judge_the_bound_on_large_sources():
    conn = duckdb.connect()
    _raw(conn, 4000, dup_share=0.25, bots=300)  # 25 % duplicates; 7.5 % bots (lower bound 6.8 %)
    _ingest_log(conn, 3000, 600)
    dup, bots, quarantine = (tm.duplicate_rate(conn, "2026-11-02"), tm.bot_share(conn, "2026-11-02"),
                             tm.quarantine_rate(conn, "2026-11-02"))
    assert dup.status == tm.WARN and dup.per_source[0]["duplicate_rate_lower"] > Thresholds().duplicate_warn
    assert bots.status == tm.WARN and quarantine.status == tm.ERROR
    for metric in (dup, bots, quarantine):
        assert metric.details["too_few_to_judge"] == [] and metric.per_source[0]["verdict"] == metric.status
        assert not validate_metric(metric).success
    # a quarantine rate just above 10 % of 3000 lines is not confidently above it: WARN, not ERROR
    conn2 = duckdb.connect()
    _raw(conn2, 10)
    _ingest_log(conn2, 3000, 320)
    assert tm.quarantine_rate(conn2, "2026-11-02").status == tm.WARN


# --- deterministic Monte Carlo ---------------------------------------------------------------

def test_cell_bayes_is_bit_identical_whatever_the_row_order():
    from mvt_pipeline.analysis.bayes_table import all_bayes, mc_seed
    from mvt_pipeline.analysis.cells import planned_cells
    from mvt_pipeline.registry import load_registry

    from .conftest import SAMPLE_REGISTRY

    registry = load_registry(SAMPLE_REGISTRY)
    frames = []
    rng = np.random.default_rng(7)
    for exp in registry.experiments:
        if exp.status == "draft":
            continue
        cells = list(planned_cells(exp))
        for metric in exp.metrics.primary:
            n = rng.integers(300, 400, len(cells)).astype(float)
            conv = np.round(n * rng.uniform(0.04, 0.07, len(cells)))
            frames.append(pd.DataFrame({"experiment_id": exp.id, "metric": metric, "segment": "overall",
                                        "cell_id": cells, "n": n, "sum": conv, "sum_sq": conv}))
    frame = pd.concat(frames, ignore_index=True)
    first = all_bayes(registry, frame)
    assert first.experiment_id.nunique() >= 2
    for seed in range(3):
        shuffled = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
        pd.testing.assert_frame_equal(all_bayes(registry, shuffled), first, check_exact=True)
    # the seed is a stable hash of (experiment, metric): fixed across processes, distinct per experiment
    assert mc_seed("pricing_abn", "signup_conversion") == 3600570471  # zlib.crc32, not the salted hash()
    pairs = {(e, m) for e, m in zip(first.experiment_id, first.metric)}
    assert len({mc_seed(e, m) for e, m in pairs}) == len(pairs)
    assert mc_seed("a", "bc") != mc_seed("ab", "c")


# --- dq_daily: sequence arithmetic that cannot overflow -------------------------------------------

def test_dq_daily_loss_survives_old_rows_with_extreme_seqs(tmp_path):
    """Rows ingested before seq was bounded to [0, 2^53 - 1] may hold any BIGINT: 2^63 - 1 next to 1,
    -2^63 next to 5. dq_daily must build (no BIGINT overflow), leave those out of the sequenced
    events, and still count exact gaps up to the bound."""
    from .test_dbt_marts import Events, dbt, ingest, one, write_registry

    write_registry(tmp_path)
    ev = Events()
    ts = "2026-01-10T10:00:00"
    ev.metric("u1", ts, "buy", 1, device_id="d1", seq=1)
    ev.metric("u1", ts, "buy", 1, device_id="d1", seq=2)   # becomes 2^63 - 1
    ev.metric("u2", ts, "buy", 1, device_id="d2", seq=5)
    ev.metric("u2", ts, "buy", 1, device_id="d2", seq=6)   # becomes -2^63
    ev.metric("u3", ts, "buy", 1, device_id="d3", seq=3)
    ev.metric("u3", ts, "buy", 1, device_id="d3", seq=4)   # becomes 2^53 - 1, the largest valid seq
    ev.write(tmp_path / "raw")
    ingest(tmp_path)
    with duckdb.connect(str(tmp_path / "wh.duckdb")) as conn:  # what the warehouse may hold from before
        conn.execute("update raw.events set seq = 9223372036854775807 where device_id = 'd1' and seq = 2")
        conn.execute("update raw.events set seq = -9223372036854775807 - 1 where device_id = 'd2' and seq = 6")
        conn.execute("update raw.events set seq = 9007199254740991 where device_id = 'd3' and seq = 4")
    dbt(tmp_path, "run", "--select", "stg_events", "dq_daily")
    n_events, n_sequenced, n_lost, loss_rate = one(
        tmp_path, "select n_events, n_sequenced, n_lost, loss_rate from marts.dq_daily where day = '2026-01-10'")
    assert n_events == 6 and n_sequenced == 4  # d1: 1; d2: 5; d3: 3 and 2^53 - 1
    assert n_lost == (5 - 1) + (3 - 1) + (2**53 - 1 - 3 - 1)  # exact: d2 lost 1-4, d3 lost 1-2 and 4..2^53-2
    assert loss_rate == pytest.approx(float(n_lost) / (4 + float(n_lost)))


def test_check_descriptions_state_the_thresholds_and_the_sample_size_rule():
    from mvt_pipeline.defs.assets.ingestion import CHECKS
    from mvt_pipeline.quality.telemetry_metrics import Thresholds, check_descriptions

    shown = {spec.name: spec.description for spec in CHECKS}
    for name in ("quarantine_rate", "duplicate_rate", "bot_share"):
        assert "at least 1000 trials" in shown[name] and "one-sided 95% bound" in shown[name], shown[name]
    custom = check_descriptions(Thresholds(min_sample=77, quarantine_warn=0.02, lag_p95_warn_s=120))
    assert "at least 77 trials" in custom["quarantine_rate"] and "WARN above 2%" in custom["quarantine_rate"]
    assert "WARN above 120 s" in custom["lag_p95"]


def test_a_day_without_sequenced_events_is_not_measurable():
    from mvt_pipeline.quality.mart_gates import not_measurable
    from mvt_pipeline.quality.telemetry_metrics import NOT_MEASURABLE

    days = _dq_daily([(0, 0), (10_000, 300), (0, 0)])
    days["n_events"] = [5_000, 10_000, 0]  # day 1: an SDK without seq; day 3: no data at all
    matured, bad = matured_days(days, NIGHT)
    assert list(matured["verdict"]) == [NOT_MEASURABLE, rb.FAIL, rb.TOO_FEW]
    assert list(not_measurable(matured)["n_events"]) == [5_000]
    assert list(bad["n"]) == [10_300]
