"""dbt marts on data with known answers: a hand-made telemetry set (exact counts for duplicates,
flips, bots, late, pre-exposure and window-edge events) and a small simulated set (counts against
the simulator's truth). Each dataset is ingested and built once per module (`dbt build`, so the
schema tests run too)."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from mvt_pipeline.config import settings
from mvt_pipeline.ingest import ingest_partition
from mvt_pipeline.ingest.dump_folders import dump_days
from mvt_pipeline.registry import load_registry
from mvt_pipeline.registry.warehouse_tables import write_registry_tables

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DBT_DIR = PROJECT_ROOT / "dbt"
DBT = str(Path(sys.executable).parent / "dbt")

# --- helpers shared with test_dbt_incremental.py ----------------------------------------------

REGISTRY_EXPERIMENTS = """
experiments:
  - id: exp_ab
    owner: t
    hypothesis: h
    status: running
    start_date: 2026-01-01
    factors:
      - {name: fa, flag_key: a, control: a0, levels: [a0, a1]}
      - {name: fb, flag_key: b, control: b0, levels: [b0, b1]}
    metrics: {primary: [conv], secondary: [rev], guardrails: [err, lat_p50]}
    attribution_window_days: 7
    pre_period_days: 14
    flip_policy: exclude
    segments: [device]
  - id: exp_fc
    owner: t
    hypothesis: h
    status: running
    start_date: 2026-01-01
    factors:
      - {name: fc, flag_key: c, control: c0, levels: [c0, c1]}
    metrics: {primary: [conv]}
    attribution_window_days: 2
    flip_policy: first_cell
"""

REGISTRY_METRICS = """
metrics:
  - {name: conv, kind: binary, source: buy}
  - {name: rev, kind: continuous, source: amount, aggregation: sum, winsorize: 1.0}
  - name: err
    kind: ratio
    numerator: {source: err, aggregation: sum}
    denominator: {source: err, aggregation: count}
    direction: lower
  - {name: lat_p50, kind: quantile, source: lat, q: 0.5, direction: lower}
"""


def write_registry(data: Path) -> Path:
    reg = data / "registry"
    reg.mkdir(parents=True, exist_ok=True)
    (reg / "experiments.yaml").write_text(REGISTRY_EXPERIMENTS)
    (reg / "metrics.yaml").write_text(REGISTRY_METRICS)
    return reg


def iso(ts: str, plus_ms: int = 0) -> str:
    t = dt.datetime.fromisoformat(ts) + dt.timedelta(milliseconds=plus_ms)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Events:
    """Builds JSONL lines; the dt folder defaults to the date of received_at (ts + 1 s)."""

    def __init__(self):
        self.lines: list[tuple[str, str, str]] = []  # (dt, file name, line)
        self.n = 0

    def add(self, unit, ts, *, event_id=None, received=None, dt_=None, file="events.jsonl",
            device="mobile", ua="ShopApp/1.0", device_id=None, context=None, **fields) -> str:
        self.n += 1
        event_id = event_id or f"e{self.n}"
        received = received or iso(ts, 1000)
        line = {"event_id": event_id, "ts": iso(ts), "received_at": received, "unit_id": unit,
                "device_id": device_id or f"d_{unit}",
                "context": context if context is not None else {
                    "device": device, "platform": "web", "country": "US", "user_agent": ua,
                    "is_new_user": False}, **fields}
        self.lines.append((dt_ or received[:10], file, json.dumps(line)))
        return event_id

    def exposure(self, unit, ts, experiment="exp_ab", hash_version="v1", **kw):
        assignment = {k: v for k, v in kw.items() if k in ("fa", "fb", "fc")}
        rest = {k: v for k, v in kw.items() if k not in assignment}
        return self.add(unit, ts, event_type="exposure", experiment_id=experiment, assignment=assignment,
                        hash_version=hash_version, **rest)

    def metric(self, unit, ts, metric, value, **kw):
        return self.add(unit, ts, event_type="metric", metric=metric, value=value, **kw)

    def write(self, raw: Path, days=None) -> None:
        files: dict[Path, list[str]] = {}
        for day, name, line in self.lines:
            if days is None or day in days:
                files.setdefault(raw / "web_sdk" / f"dt={day}" / name, []).append(line)
        for path, lines in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(lines) + "\n")


def ingest(data: Path, days=None) -> None:
    registry = load_registry(data / "registry")
    with duckdb.connect(str(data / "wh.duckdb")) as conn:
        write_registry_tables(conn, registry)
        for day in days or dump_days(data / "raw"):
            ingest_partition(conn, data / "raw", day, registry)


def dbt(data: Path, *args: str, vars_: dict | None = None, project_dir: Path = DBT_DIR) -> str:
    env = {**os.environ, **settings().dbt_environment(), "MVT_DUCKDB_PATH": str(data / "wh.duckdb"),
           "MVT_DUCKDB_TEMP_DIR": str(data / "duckdb_tmp"), "DO_NOT_TRACK": "1",
           "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    cmd = [DBT, *args, "--project-dir", str(project_dir), "--profiles-dir", str(project_dir),
           "--target-path", str(data / "dbt_target"), "--log-path", str(data / "dbt_logs")]
    if vars_:
        cmd += ["--vars", json.dumps(vars_)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    return proc.stdout


def query(data: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(data / "wh.duckdb"), read_only=True) as conn:
        return conn.execute(sql).fetchall()


def one(data: Path, sql: str):
    rows = query(data, sql)
    assert len(rows) == 1, rows
    return rows[0] if len(rows[0]) > 1 else rows[0][0]


HAND_VARS = {"bot_events_per_day": 10}


def hand_made_events() -> Events:
    """The scenario the exact-count tests below rely on (unit by unit)."""
    ev = Events()
    # u1: 2x2 cell a0|b0; exposure also re-sent the next day (cross-day duplicate); converts and
    # spends after exposure, also in the pre-period; one event exactly at exposure time (in), one
    # exactly at the window's edge (out); 2 requests (1 error), 2 latencies; device seq with a gap.
    e = ev.exposure("u1", "2026-01-10T10:00:00", fa="a0", fb="b0", device_id="d1", seq=1)
    ev.add("u1", "2026-01-10T10:00:00", event_id=e, received=iso("2026-01-11T09:00:00"),
           event_type="exposure", experiment_id="exp_ab", assignment={"fa": "a0", "fb": "b0"},
           hash_version="v1", device_id="d1", seq=1)
    ev.metric("u1", "2026-01-10T12:00:00", "buy", 1, device_id="d1", seq=2)
    ev.metric("u1", "2026-01-10T12:00:00", "amount", 20, device_id="d1", seq=3)
    ev.metric("u1", "2026-01-10T10:00:00", "amount", 1, device_id="d1", seq=5)  # at exposure: in
    ev.metric("u1", "2026-01-17T10:00:00", "buy", 1, device_id="d1", seq=6)  # at window edge: out
    ev.metric("u1", "2026-01-09T10:00:00", "buy", 1, device_id="d1")  # pre-period
    ev.metric("u1", "2026-01-09T10:00:00", "amount", 5, device_id="d1")  # pre-period
    ev.metric("u1", "2026-01-10T13:00:00", "err", 0, device_id="d1")
    ev.metric("u1", "2026-01-10T13:00:01", "err", 1, device_id="d1")
    ev.metric("u1", "2026-01-10T13:00:02", "lat", 100, device_id="d1")
    ev.metric("u1", "2026-01-10T13:00:03", "lat", 300, device_id="d1")
    # u1 in exp_fc: flips c0 -> c1 (policy first_cell keeps it in c0); buy at 12:00 is inside the
    # 2-day window, the pre-period buy is its covariate.
    ev.exposure("u1", "2026-01-10T10:00:00", experiment="exp_fc", fc="c0", device_id="d1")
    ev.exposure("u1", "2026-01-10T11:00:00", experiment="exp_fc", fc="c1", device_id="d1")
    # u2: its only event is an exposure sent three times (same id, same payload)
    e = ev.exposure("u2", "2026-01-10T10:00:00", fa="a1", fb="b0")
    for k in (2, 3):
        ev.add("u2", "2026-01-10T10:00:00", event_id=e, received=iso("2026-01-10T10:00:00", 1000 * k),
               event_type="exposure", experiment_id="exp_ab", assignment={"fa": "a1", "fb": "b0"},
               hash_version="v1")
    # u3: converts one hour BEFORE exposure (pre-period covariate only)
    ev.metric("u3", "2026-01-10T08:00:00", "buy", 1)
    ev.exposure("u3", "2026-01-10T09:00:00", fa="a1", fb="b1")
    # u4: exposed on the last day, converts the same night
    ev.exposure("u4", "2026-01-12T23:00:00", fa="a0", fb="b1", device="desktop")
    ev.metric("u4", "2026-01-12T23:30:00", "buy", 1, device="desktop")
    # u5: flips a0|b0 -> a1|b0 on a second device with hash v2 (policy exclude)
    ev.exposure("u5", "2026-01-10T09:00:00", fa="a0", fb="b0", device_id="d5a")
    ev.exposure("u5", "2026-01-11T09:00:00", fa="a1", fb="b0", device_id="d5b", hash_version="v2")
    ev.metric("u5", "2026-01-11T10:00:00", "buy", 1, device_id="d5b")
    # u6: bot by user agent; u7: bot by event rate (13 events in a day > 10)
    ev.exposure("u6", "2026-01-10T09:00:00", fa="a1", fb="b1", ua="Mozilla/5.0 (compatible; Googlebot/2.1)")
    ev.metric("u6", "2026-01-10T09:30:00", "buy", 1, ua="Mozilla/5.0 (compatible; Googlebot/2.1)")
    ev.exposure("u7", "2026-01-10T09:00:00", fa="a0", fb="b1")
    for i in range(12):
        ev.metric("u7", f"2026-01-10T10:{i:02d}:00", "err", 0)
    # u8: per-factor exposures (one event per factor); three latencies, one arriving 2 days late
    ev.exposure("u8", "2026-01-10T10:00:00", fa="a1")
    ev.exposure("u8", "2026-01-10T10:05:00", fb="b1")
    ev.metric("u8", "2026-01-10T11:00:00", "lat", 250, received=iso("2026-01-12T11:00:00"))
    ev.metric("u8", "2026-01-10T11:01:00", "lat", 50)
    ev.metric("u8", "2026-01-10T11:02:00", "lat", 150)
    # u9: only factor A ever exposed -> incomplete assignment
    ev.exposure("u9", "2026-01-10T10:00:00", fa="a0")
    # u10: the same event id with two different payloads; the earlier received (10) wins
    ev.exposure("u10", "2026-01-10T10:00:00", fa="a0", fb="b1")
    e = ev.metric("u10", "2026-01-10T11:00:00", "amount", 10)
    ev.add("u10", "2026-01-10T11:00:00", event_id=e, received=iso("2026-01-10T11:00:05"),
           event_type="metric", metric="amount", value=99)
    # exp_fc: u11's only buy is exactly at the 2-day window edge (out); u12's 1 ms before it (in)
    ev.exposure("u11", "2026-01-11T00:00:00", experiment="exp_fc", fc="c1")
    ev.metric("u11", "2026-01-13T00:00:00", "buy", 1, received=iso("2026-01-12T23:59:59"))
    ev.exposure("u12", "2026-01-11T00:00:00", experiment="exp_fc", fc="c0")
    ev.metric("u12", "2026-01-12T23:59:59.999", "buy", 1, received=iso("2026-01-12T23:59:59"))
    return ev


def make_hand_made(data: Path) -> Events:
    write_registry(data)
    ev = hand_made_events()
    ev.write(data / "raw")
    bad = data / "raw" / "web_sdk" / "dt=2026-01-10" / "broken.jsonl"
    bad.write_text('{"event_id": "x1", "ts": \n')
    return ev


# --- hand-made data: exact counts --------------------------------------------------------------

@pytest.fixture(scope="module")
def hand(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("dbt_hand")
    make_hand_made(data)
    ingest(data)
    dbt(data, "build", vars_=HAND_VARS)
    return data


def test_stg_events_dedup_copies_and_conflicts(hand):
    lines = one(hand, "select count(*) from raw.events")
    n, copies, conflicts = one(hand, "select count(*), sum(n_copies), sum(case when payload_conflict then 1 else 0 end)"
                                     " from staging.stg_events")
    assert copies == lines and n == lines - 4  # u1 re-send, u2 two re-sends, u10 conflicting copy
    assert conflicts == 1
    assert one(hand, "select value from staging.stg_events where unit_id = 'u10' and metric = 'amount'") == 10
    # the unit whose only events are duplicates: one event, three copies, one exposure row
    assert query(hand, "select n_copies from staging.stg_events where unit_id = 'u2'") == [(3,)]
    assert one(hand, "select n_exposure_events from marts.fct_exposures where unit_id = 'u2'") == 1
    # cross-day re-send: the copy received first (dt 2026-01-10) wins
    assert one(hand, "select dt, n_copies, last_copy_dt from staging.stg_events "
                     "where unit_id = 'u1' and event_type = 'exposure' and experiment_id = 'exp_ab'") == (
        dt.date(2026, 1, 10), 2, dt.date(2026, 1, 11))


def test_fct_exposures_flags(hand):
    rows = query(hand, "select experiment_id, unit_id, cell_id, n_cells_seen, is_flipped, n_devices,"
                       " n_hash_version_changes, is_bot, is_incomplete, exclusion_reason, is_analysable"
                       " from marts.fct_exposures order by 1, 2")
    got = {(r[0], r[1]): r[2:] for r in rows}
    assert len(got) == 13
    assert got[("exp_ab", "u1")] == ("fa=a0|fb=b0", 1, False, 1, 0, False, False, None, True)
    assert got[("exp_ab", "u5")] == ("fa=a0|fb=b0", 2, True, 2, 1, False, False, "flipped", False)
    assert got[("exp_ab", "u6")][2:] == (False, 1, 0, True, False, "bot", False)
    assert got[("exp_ab", "u7")][5:] == (True, False, "bot", False)
    assert got[("exp_ab", "u8")] == ("fa=a1|fb=b1", 1, False, 1, 0, False, False, None, True)
    assert got[("exp_ab", "u9")][-3:] == (True, "incomplete_assignment", False)
    # first_cell policy: the flipped unit stays, in its first cell
    assert got[("exp_fc", "u1")] == ("fc=c0", 2, True, 1, 0, False, False, None, True)
    assert one(hand, "select count(*) from marts.fct_exposures where is_analysable") == 6 + 3
    bot_rule = query(hand, "select unit_id, is_bot_user_agent, is_bot_event_rate from marts.fct_exposures"
                           " where is_bot order by 1")
    assert bot_rule == [("u6", True, False), ("u7", False, True)]
    assert one(hand, "select attribution_end_at from marts.fct_exposures where unit_id = 'u4'") == \
        dt.datetime(2026, 1, 19, 23, 0)


def test_dq_assignment_counts(hand):
    rows = query(hand, "select cell_id, n_exposed, n_bots, n_incomplete, n_flipped, n_multi_device,"
                       " n_hash_version_changes, n_analysable, n_srm_units from marts.dq_assignment"
                       " where experiment_id = 'exp_ab' order by 1")
    assert rows == [
        ("fa=a0", 1, 0, 1, 0, 0, 0, 0, 0),
        ("fa=a0|fb=b0", 2, 0, 0, 1, 1, 1, 1, 2),
        ("fa=a0|fb=b1", 3, 1, 0, 0, 0, 0, 2, 2),
        ("fa=a1|fb=b0", 1, 0, 0, 0, 0, 0, 1, 1),
        ("fa=a1|fb=b1", 3, 1, 0, 0, 0, 0, 2, 2),
    ]


def test_fct_outcomes_window_edges_and_pre_period(hand):
    rows = query(hand, "select experiment_id, unit_id, source_metric, value, ts, period from marts.fct_outcomes"
                       " where source_metric = 'buy' order by 1, 2, 5")
    assert rows == [
        ("exp_ab", "u1", "buy", 1.0, dt.datetime(2026, 1, 9, 10), "pre"),
        ("exp_ab", "u1", "buy", 1.0, dt.datetime(2026, 1, 10, 12), "post"),  # 01-17 10:00 = edge: out
        ("exp_ab", "u3", "buy", 1.0, dt.datetime(2026, 1, 10, 8), "pre"),  # converted before exposure
        ("exp_ab", "u4", "buy", 1.0, dt.datetime(2026, 1, 12, 23, 30), "post"),  # exposed on the last day
        ("exp_fc", "u1", "buy", 1.0, dt.datetime(2026, 1, 9, 10), "pre"),
        ("exp_fc", "u1", "buy", 1.0, dt.datetime(2026, 1, 10, 12), "post"),
        ("exp_fc", "u12", "buy", 1.0, dt.datetime(2026, 1, 12, 23, 59, 59, 999000), "post"),
    ]  # u11's buy exactly at its window edge is not attributed; bots' and flipped units' are not either
    assert one(hand, "select count(*) from marts.fct_outcomes where unit_id = 'u1' and source_metric = 'amount'"
                     " and period = 'post'") == 2  # the event at exactly first exposure counts


def test_fct_unit_metrics_values(hand):
    rows = query(hand, "select experiment_id, unit_id, metric, value, covariate, numerator, denominator, device"
                       " from marts.fct_unit_metrics order by 1, 2, 3")
    got = {r[:3]: r[3:] for r in rows}
    assert len(got) == 6 * 4 + 3
    assert got[("exp_ab", "u1", "conv")] == (1, 1, None, None, "mobile")
    assert got[("exp_ab", "u1", "rev")] == (21, 5, None, None, "mobile")
    assert got[("exp_ab", "u1", "err")] == (0.5, None, 1, 2, "mobile")
    assert got[("exp_ab", "u1", "lat_p50")] == (None, None, 400, 2, "mobile")
    # zero-filled / NULL-aware for the unit whose only event is a (duplicated) exposure
    assert got[("exp_ab", "u2", "conv")] == (0, 0, None, None, "mobile")
    assert got[("exp_ab", "u2", "rev")] == (0, 0, None, None, "mobile")
    assert got[("exp_ab", "u2", "err")] == (None, None, 0, 0, "mobile")
    assert got[("exp_ab", "u3", "conv")] == (0, 1, None, None, "mobile")
    assert got[("exp_ab", "u4", "conv")] == (1, 0, None, None, "desktop")
    assert got[("exp_ab", "u10", "rev")][0] == 10
    assert got[("exp_fc", "u11", "conv")][0] == 0
    assert got[("exp_fc", "u12", "conv")][0] == 1


def test_agg_cell_stats_sums(hand):
    rows = query(hand, "select cell_id, n_units, n, sum, sum_sq, cov_sum, cov_sum_sq, cross_sum from marts.agg_cell_stats"
                       " where experiment_id = 'exp_ab' and metric = 'conv' and segment = 'overall' order by 1")
    assert rows == [
        ("fa=a0|fb=b0", 1, 1, 1, 1, 1, 1, 1),
        ("fa=a0|fb=b1", 2, 2, 1, 1, 0, 0, 0),
        ("fa=a1|fb=b0", 1, 1, 0, 0, 0, 0, 0),
        ("fa=a1|fb=b1", 2, 2, 0, 0, 1, 1, 0),
    ]
    err = one(hand, "select n_units, n, num_sum, den_sum, num_sum_sq, den_sum_sq, num_den_sum from marts.agg_cell_stats"
                    " where experiment_id = 'exp_ab' and metric = 'err' and segment = 'overall' and cell_id = 'fa=a0|fb=b0'")
    assert err == (1, 1, 1, 2, 1, 4, 2)
    segs = query(hand, "select segment_value, sum(n_units), sum(sum) from marts.agg_cell_stats where experiment_id = 'exp_ab'"
                       " and metric = 'conv' and segment = 'device' group by 1 order by 1")
    assert segs == [("desktop", 1, 1), ("mobile", 5, 1)]
    assert one(hand, "select count(*) from marts.agg_cell_stats where experiment_id = 'exp_fc' and segment <> 'overall'") == 0


def test_agg_cell_quantiles(hand):
    rows = query(hand, "select cell_id, n_units, n_events, rank_point, quantile_value, rank_lower, ci_lower_value,"
                       " rank_upper, ci_upper_value from marts.agg_cell_quantiles order by 1")
    assert rows == [
        ("fa=a0|fb=b0", 1, 2, 1, 100, 1, 100, 2, 300),
        # n=3, q=0.5: point rank ceil(1.5)=2; CI ranks 1.5 -+ 1.96*sqrt(0.75) -> floor(-0.2), ceil(3.2), clamped
        ("fa=a1|fb=b1", 1, 3, 2, 150, 1, 50, 3, 250),
    ]


def test_dq_daily(hand):
    rows = {r[0].isoformat(): r[1:] for r in query(
        hand, "select day, n_lines, n_quarantined, n_events, n_duplicate_lines, n_payload_conflicts, n_late, n_lost"
              " from marts.dq_daily order by 1")}
    assert set(rows) == {"2026-01-09", "2026-01-10", "2026-01-11", "2026-01-12", "2026-01-17"}
    assert rows["2026-01-10"][1] == 1  # the broken line
    assert rows["2026-01-11"][3] == 1  # u1's re-sent exposure arrived on 01-11
    assert sum(r[3] for r in rows.values()) == 4 and sum(r[4] for r in rows.values()) == 1
    assert rows["2026-01-12"][5] == 1  # u8's latency received two days late
    assert sum(r[6] for r in rows.values()) == 1  # d1 sent seq 1, 2, 3, 5, 6: seq 4 was lost
    assert sum(r[0] for r in rows.values()) == one(hand, "select count(*) from raw.events")


# --- simulated data: counts against the simulator's truth --------------------------------------

@pytest.fixture(scope="module")
def simulated(tmp_path_factory) -> tuple[Path, dict]:
    from mvt_pipeline.simulate import SimulationConfig, simulate
    from mvt_pipeline.simulate.truth import Faults

    data = tmp_path_factory.mktemp("dbt_sim")
    registry = load_registry(PROJECT_ROOT / "data" / "registry")
    faults = Faults(duplicate_rate=0.03, loss_rate=0.01, late_rate=0.02, bot_share=0.02, flip_rate=0.02,
                    malformed_rate=0.002)
    config = SimulationConfig(users=1500, days=5, seed=7, faults=faults, start_date=dt.date(2026, 11, 2),
                              exposure_mode={"pricing_abn": "per_factor"})
    truth = simulate(registry, config, data, log=lambda *_: None)
    with duckdb.connect(str(data / "wh.duckdb")) as conn:
        write_registry_tables(conn, registry)
        for day in dump_days(data / "raw"):
            ingest_partition(conn, data / "raw", day, registry)
    dbt(data, "build")
    return data, truth


def test_simulated_counts_match_truth(simulated):
    data, truth = simulated
    counts = truth["counts"]
    assert one(data, "select count(*) from staging.stg_events") == counts["events_written"]
    assert one(data, "select sum(n_copies - 1) from staging.stg_events") == counts["duplicates"]
    assert one(data, "select sum(n_duplicate_lines) from marts.dq_daily") == counts["duplicates"]
    assert one(data, "select sum(n_late) from marts.dq_daily") == counts["late"]
    assert one(data, "select sum(n_lost) from marts.dq_daily") == counts["lost"] - counts["lost_trailing"]
    assert one(data, "select sum(n_quarantined) from marts.dq_daily") == sum(counts["malformed"].values())
    assert one(data, "select count(distinct unit_id) from marts.fct_exposures where is_flipped") == counts["flipped_units"]
    assert one(data, "select count(distinct unit_id) from marts.fct_exposures where is_bot") == counts["bot_units"]
    assert one(data, "select count(*) from marts.fct_exposures where is_incomplete") == 0
    # per-factor exposures give the same cell keys as whole-cell ones
    cells = {r[0] for r in query(data, "select cell_id from marts.dq_assignment where experiment_id = 'pricing_abn'")}
    assert cells == set(counts["units_per_cell"]["pricing_abn"])


def test_simulated_cell_stats_are_consistent(simulated):
    data, _ = simulated
    # every analysable unit appears once per metric, the segment rows add up to the overall rows
    assert one(data, "select count(*) from (select experiment_id, metric, segment, sum(n_units) n from marts.agg_cell_stats"
                     " group by 1, 2, 3) s join (select experiment_id, count(*) n from marts.fct_exposures where is_analysable"
                     " group by 1) u using (experiment_id) where s.n <> u.n") == 0
    assert one(data, "select count(*) from marts.agg_cell_quantiles where not (ci_lower_value <= quantile_value"
                     " and quantile_value <= ci_upper_value)") == 0
    assert one(data, "select count(*) from marts.agg_cell_quantiles") == 12
