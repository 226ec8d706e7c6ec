"""analysis.budget_burn: (a) `budget_burn` against an independent computation from simulated
per-event rows (a burst that pauses a treated cell in the 1 h window only, the same burst in control
too -> an incident, not a pause, sparse and empty windows, a control too sparse to compare with, a
hand-checkable 14.4x burn); (b) `marts.agg_cell_slo_hourly` on hand-made telemetry (exact counts per
hour bucket; pre-exposure, bot, after-as_of and non-SLO events left out)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import yaml

from mvt_pipeline.analysis.budget_burn import COLUMNS, budget_burn
from mvt_pipeline.registry import Registry, load_registry
from mvt_pipeline.warehouse import store
from mvt_pipeline.warehouse.analysis_schema import table

from ..test_dbt_marts import Events, dbt, ingest, query

EXPERIMENTS = """
experiments:
  - id: exp_burn
    owner: t
    hypothesis: h
    status: running
    start_date: 2026-01-01
    factors:
      - {name: fa, control: a0, levels: [a0, a1]}
      - {name: fb, control: b0, levels: [b0, b1]}
    metrics: {primary: [conv], guardrails: [err_rate]}
  - id: exp_incident
    owner: t
    hypothesis: h
    status: running
    start_date: 2026-01-01
    factors:
      - {name: fc, control: c0, levels: [c1, c0]}
    metrics: {primary: [err_rate]}
  - id: exp_ctl_sparse
    owner: t
    hypothesis: h
    status: running
    start_date: 2026-01-01
    factors:
      - {name: fd, control: d0, levels: [d0, d1]}
    metrics: {primary: [conv], secondary: [err_rate]}
  - id: exp_hand
    owner: t
    hypothesis: h
    status: running
    start_date: 2026-01-01
    factors:
      - {name: fe, control: e0, levels: [e0, e1]}
    metrics: {primary: [conv], guardrails: [lat_slo]}
    decision_rules: {burn_short_windows_hours: [1], burn_long_window_hours: 6}
  - id: exp_draft
    owner: t
    hypothesis: h
    status: draft
    start_date: 2026-01-01
    factors:
      - {name: fg, control: g0, levels: [g0, g1]}
    metrics: {primary: [err_rate]}
"""

METRICS = """
metrics:
  - {name: conv, kind: binary, source: buy}
  - name: err_rate
    kind: ratio
    numerator: {source: err, aggregation: sum}
    denominator: {source: err, aggregation: count}
    direction: lower
    slo: {objective: 0.999, good_below: 1}
  - name: lat_slo
    kind: quantile
    source: lat
    q: 0.99
    direction: lower
    slo: {objective: 0.999, good_below: 800, period_days: 30}
"""


def make_registry() -> Registry:
    return Registry(experiments=yaml.safe_load(EXPERIMENTS)["experiments"],
                    metrics=yaml.safe_load(METRICS)["metrics"])


# --- (a) pure: against per-event rows ----------------------------------------------------------

T0 = pd.Timestamp("2026-02-01 00:00:00")
HOURS = 30  # simulated hours; the last one is hour 29


def _events(rng, experiment, metric, cell, hour, n, bad):
    """n events of one cell in one hour at random seconds; `bad` = exactly this many bad (int) or a
    per-event probability (float)."""
    seconds = np.sort(rng.integers(0, 3600, n))
    if isinstance(bad, int):
        flags = np.zeros(n, dtype=bool)
        flags[rng.choice(n, bad, replace=False)] = True
    else:
        flags = rng.random(n) < bad
    return pd.DataFrame({"experiment_id": experiment, "metric": metric, "cell_id": cell,
                         "ts": T0 + pd.Timedelta(hours=hour) + pd.to_timedelta(seconds, unit="s"),
                         "bad": flags})


def simulated_events() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    parts = []
    # exp_burn: a steady 0.05 % bad rate in all cells; a1|b0 has a burst in the last hour at low
    # traffic (40 of 100 bad: 1 h burns 400x = 60 % of a 28-day budget, 6 h and 24 h stay below
    # half); a0|b1 sends only 20 events in the last hour (sparse); a1|b1 stops 8 hours before the end.
    cells = ["fa=a0|fb=b0", "fa=a1|fb=b0", "fa=a0|fb=b1", "fa=a1|fb=b1"]
    for h in range(HOURS):
        for c in cells:
            last = h == HOURS - 1
            if c == "fa=a1|fb=b1" and h >= HOURS - 8:
                continue
            if last and c == "fa=a1|fb=b0":
                parts.append(_events(rng, "exp_burn", "err_rate", c, h, 100, 40))
            elif last and c == "fa=a0|fb=b1":
                parts.append(_events(rng, "exp_burn", "err_rate", c, h, 20, 0.0005))
            else:
                parts.append(_events(rng, "exp_burn", "err_rate", c, h, int(rng.poisson(1000)), 0.0005))
    # exp_incident: the same burst in both cells (treated and control) in the last hour
    for h in range(HOURS):
        for c in ["fc=c0", "fc=c1"]:
            if h == HOURS - 1:
                parts.append(_events(rng, "exp_incident", "err_rate", c, h, 100, 40))
            else:
                parts.append(_events(rng, "exp_incident", "err_rate", c, h, int(rng.poisson(800)), 0.0005))
    # exp_ctl_sparse: the treated cell bursts while the control has too few events to compare with
    for h in range(HOURS - 3, HOURS):
        parts.append(_events(rng, "exp_ctl_sparse", "err_rate", "fd=d0", h, 10, 0))
        parts.append(_events(rng, "exp_ctl_sparse", "err_rate", "fd=d1", h, 200, 90 if h == HOURS - 1 else 0))
    # exp_hand: one hour, control bad ratio 0.0144 (144 of 10 000); the other cell has no events
    parts.append(_events(rng, "exp_hand", "lat_slo", "fe=e0", HOURS - 1, 10_000, 144))
    # a draft experiment and an unknown one: never judged
    parts.append(_events(rng, "exp_draft", "err_rate", "fg=g1", HOURS - 1, 500, 400))
    parts.append(_events(rng, "exp_gone", "err_rate", "x=1", HOURS - 1, 500, 400))
    return pd.concat(parts, ignore_index=True)


def to_hourly(events: pd.DataFrame, registry: Registry) -> pd.DataFrame:
    """What marts.agg_cell_slo_hourly holds for these events."""
    hourly = (events.assign(hour=events["ts"].dt.floor("h"))
              .groupby(["experiment_id", "metric", "cell_id", "hour"], as_index=False)
              .agg(events=("bad", "size"), bad_events=("bad", "sum")))
    slos = {m.name: m.slo for m in registry.metrics if m.slo}
    hourly["slo_objective"] = hourly["metric"].map(lambda m: slos[m].objective)
    hourly["slo_good_below"] = hourly["metric"].map(lambda m: slos[m].good_below)
    hourly["slo_period_days"] = hourly["metric"].map(lambda m: slos[m].period_days)
    hourly["slo_key"] = (hourly["experiment_id"] + ":" + hourly["metric"] + ":" + hourly["cell_id"]
                         + ":" + hourly["hour"].astype(str))
    return hourly.sample(frac=1.0, random_state=3).reset_index(drop=True)  # order must not matter


def expected_rows(events: pd.DataFrame, registry: Registry) -> dict[tuple, dict]:
    """Straight from the per-event rows, cell by cell: window end = the hour after the experiment's
    last event, counts by timestamp masks, the status rules spelled out as if/else."""
    out = {}
    for exp in registry.experiments:
        if exp.status == "draft":
            continue
        ev = events[events["experiment_id"] == exp.id]
        if ev.empty:
            continue
        rules = exp.decision_rules
        end = ev["ts"].max().floor("h") + pd.Timedelta(hours=1)
        levels = [[f"{f.name}={lvl}" for lvl in f.levels] for f in exp.factors]
        cells = ["|".join(combo) for combo in pd.MultiIndex.from_product(levels)]
        control = "|".join(f"{f.name}={f.control}" for f in exp.factors)
        metrics = [m for m in (*exp.metrics.primary, *exp.metrics.secondary, *exp.metrics.guardrails)
                   if registry.metric(m).slo]
        for metric in metrics:
            slo = registry.metric(metric).slo
            for w in sorted({*rules.burn_short_windows_hours, rules.burn_long_window_hours}):
                start = end - pd.Timedelta(hours=w)
                stats = {}
                for cell in cells:
                    ts = ev.loc[(ev["metric"] == metric) & (ev["cell_id"] == cell), "ts"].to_numpy()
                    bad = ev.loc[(ev["metric"] == metric) & (ev["cell_id"] == cell), "bad"].to_numpy()
                    inside = (ts >= start.to_datetime64()) & (ts < end.to_datetime64())
                    n, b = int(inside.sum()), int(bad[inside].sum())
                    burn = (b / n) / (1 - slo.objective) if n else float("nan")
                    stats[cell] = (n, b, burn, burn * w / (24 * slo.period_days))
                for cell, (n, b, burn, consumed) in stats.items():
                    cn, _cb, cburn, _cc = stats[control]
                    short = w in rules.burn_short_windows_hours
                    if n < rules.burn_min_events:
                        status = "not_judged"
                    elif (short and cell != control and consumed > rules.burn_pause_share
                          and (cn < rules.burn_min_events or burn > cburn)):
                        status = "pause"
                    elif consumed > rules.burn_pause_share:
                        status = "burning"
                    else:
                        status = "ok"
                    out[(exp.id, metric, cell, w)] = dict(
                        events=n, bad_events=b, burn_rate=burn, budget_consumed=consumed,
                        control_burn_rate=cburn, status=status, window_start=start, window_end=end,
                        is_control=cell == control, short_window=short)
    return out


@pytest.fixture(scope="module")
def burn():
    registry = make_registry()
    events = simulated_events()
    result = budget_burn(registry, to_hourly(events, registry))
    return result, expected_rows(events, registry)


def _row(result, experiment, cell, window, metric="err_rate"):
    rows = result[(result["experiment_id"] == experiment) & (result["metric"] == metric)
                  & (result["cell_id"] == cell) & (result["window_hours"] == window)]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def test_columns_match_the_analysis_table(burn):
    result, _ = burn
    assert list(result.columns) == list(COLUMNS)
    assert list(COLUMNS) == [c for c in table("budget_burn").column_names if c not in ("as_of", "computed_at")]


def test_matches_the_per_event_computation(burn):
    result, expected = burn
    got = {(r.experiment_id, r.metric, r.cell_id, int(r.window_hours)): r for r in result.itertuples()}
    assert set(got) == set(expected)  # every cell and window, no draft or unknown experiment
    for key, exp in expected.items():
        row = got[key]
        assert (row.events, row.bad_events) == (exp["events"], exp["bad_events"]), key
        for col in ("burn_rate", "budget_consumed", "control_burn_rate"):
            assert getattr(row, col) == pytest.approx(exp[col], rel=1e-12, nan_ok=True), (key, col)
        assert row.status == exp["status"], key
        assert (row.is_control, row.short_window) == (exp["is_control"], exp["short_window"]), key
        assert (row.window_start, row.window_end) == (exp["window_start"], exp["window_end"]), key
        assert row.objective == 0.999
        assert row.bad_ratio == pytest.approx(exp["bad_events"] / exp["events"] if exp["events"] else np.nan,
                                              nan_ok=True)


def test_burst_in_a_treated_cell_pauses_in_the_short_window_only(burn):
    result, _ = burn
    one_hour = _row(result, "exp_burn", "fa=a1|fb=b0", 1)
    assert (one_hour.events, one_hour.bad_events) == (100, 40)
    assert one_hour.burn_rate == pytest.approx(400.0)
    assert one_hour.budget_consumed == pytest.approx(400 / (24 * 28))  # 60 % of the budget in 1 h
    assert one_hour.status == "pause"
    assert one_hour.control_burn_rate < 5
    for window in (6, 24):
        assert _row(result, "exp_burn", "fa=a1|fb=b0", window).status == "ok"
    assert _row(result, "exp_burn", "fa=a0|fb=b0", 1).status == "ok"


def test_same_burst_in_control_is_an_incident_not_a_pause(burn):
    result, _ = burn
    treated, control = _row(result, "exp_incident", "fc=c1", 1), _row(result, "exp_incident", "fc=c0", 1)
    assert treated.burn_rate == control.burn_rate == pytest.approx(400.0)
    assert treated.control_burn_rate == pytest.approx(400.0)
    assert control.is_control and not treated.is_control
    assert (treated.status, control.status) == ("burning", "burning")
    assert "pause" not in set(result.loc[result["experiment_id"] == "exp_incident", "status"])


def test_sparse_and_empty_windows_are_not_judged(burn):
    result, _ = burn
    sparse = _row(result, "exp_burn", "fa=a0|fb=b1", 1)
    assert sparse.events == 20 and sparse.status == "not_judged"
    assert _row(result, "exp_burn", "fa=a0|fb=b1", 6).status == "ok"
    for window in (1, 6):  # a1|b1 sent nothing in the last 8 hours: a row with 0 events
        empty = _row(result, "exp_burn", "fa=a1|fb=b1", window)
        assert (empty.events, empty.bad_events, empty.status) == (0, 0, "not_judged")
        assert np.isnan(empty.burn_rate) and np.isnan(empty.budget_consumed)
    assert _row(result, "exp_burn", "fa=a1|fb=b1", 24).status == "ok"


def test_a_control_too_sparse_to_compare_does_not_hide_a_burst(burn):
    result, _ = burn
    control, treated = _row(result, "exp_ctl_sparse", "fd=d0", 1), _row(result, "exp_ctl_sparse", "fd=d1", 1)
    assert control.status == "not_judged" and control.burn_rate == 0
    assert treated.status == "pause"


def test_hand_checked_burn_rate_and_budget(burn):
    """0.0144 bad with a 99.9 % objective = 14.4x burn; 1 h of a 30-day budget at 14.4x = 2 %."""
    result, _ = burn
    row = _row(result, "exp_hand", "fe=e0", 1, metric="lat_slo")
    assert (row.events, row.bad_events, row.period_days) == (10_000, 144, 30)
    assert row.bad_ratio == pytest.approx(0.0144)
    assert row.burn_rate == pytest.approx(14.4)
    assert row.budget_consumed == pytest.approx(0.02)
    assert row.status == "ok" and row.is_control and row.short_window
    long = _row(result, "exp_hand", "fe=e0", 6, metric="lat_slo")
    assert long.budget_consumed == pytest.approx(0.12) and not long.short_window
    other = _row(result, "exp_hand", "fe=e1", 1, metric="lat_slo")
    assert other.events == 0 and other.status == "not_judged" and other.control_burn_rate == pytest.approx(14.4)
    assert sorted(result.loc[result["experiment_id"] == "exp_hand", "window_hours"].unique()) == [1, 6]


def test_no_slo_data_gives_an_empty_frame_with_the_columns():
    empty = budget_burn(make_registry(), pd.DataFrame(columns=["experiment_id", "metric", "cell_id", "hour",
                                                               "events", "bad_events"]))
    assert empty.empty and list(empty.columns) == list(COLUMNS)


# --- (b) dbt: marts.agg_cell_slo_hourly on hand-made telemetry ---------------------------------

DBT_EXPERIMENTS = """
experiments:
  - id: exp_slo
    owner: t
    hypothesis: h
    status: running
    start_date: 2026-01-01
    factors:
      - {name: fa, flag_key: a, control: a0, levels: [a0, a1]}
    metrics: {primary: [conv], guardrails: [err_rate, lat_slo]}
"""

DBT_METRICS = """
metrics:
  - {name: conv, kind: binary, source: buy}
  - name: err_rate
    kind: ratio
    numerator: {source: err, aggregation: sum}
    denominator: {source: err, aggregation: count}
    direction: lower
    slo: {objective: 0.99, good_below: 1, period_days: 7}
  - {name: lat_slo, kind: continuous, source: lat, direction: lower, slo: {objective: 0.999, good_below: 800}}
"""


@pytest.fixture(scope="module")
def slo_mart(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("dbt_slo")
    reg = data / "registry"
    reg.mkdir()
    (reg / "experiments.yaml").write_text(DBT_EXPERIMENTS)
    (reg / "metrics.yaml").write_text(DBT_METRICS)
    ev = Events()
    bot = "Mozilla/5.0 (compatible; Googlebot/2.1)"
    # u1 (a0): exposed 10:00; an err before exposure (out), err 0/1 at 10:00 (in, at exposure) and
    # 10:59:59, lat 100 / 900 / 800 (800 is bad: good means below 800) at 11:xx, a buy (no SLO)
    ev.exposure("u1", "2026-01-10T10:00:00", experiment="exp_slo", fa="a0")
    ev.metric("u1", "2026-01-10T09:59:59", "err", 1)
    ev.metric("u1", "2026-01-10T10:00:00", "err", 0)
    ev.metric("u1", "2026-01-10T10:59:59", "err", 1)
    ev.metric("u1", "2026-01-10T11:00:00", "lat", 100)
    ev.metric("u1", "2026-01-10T11:10:00", "lat", 900)
    ev.metric("u1", "2026-01-10T11:20:00", "lat", 800)
    ev.metric("u1", "2026-01-10T11:30:00", "buy", 1)
    # u2 (a1): exposed 09:30; err 1 at 09:45 and 10:15, err 0 at 23:59:59 of the as_of day (in);
    # an err stamped after the as_of day by a clock running ahead, received that day (out), and an
    # err that arrives the next day (out)
    ev.exposure("u2", "2026-01-10T09:30:00", experiment="exp_slo", fa="a1")
    ev.metric("u2", "2026-01-10T09:45:00", "err", 1)
    ev.metric("u2", "2026-01-10T10:15:00", "err", 1)
    ev.metric("u2", "2026-01-10T23:59:59", "err", 0, received="2026-01-10T23:59:59.500Z")
    ev.metric("u2", "2026-01-11T01:00:00", "err", 1, received="2026-01-10T23:00:00.000Z")
    ev.metric("u2", "2026-01-11T08:00:00", "err", 1)
    # u3 (a1): a bot by user agent, errors after exposure (out)
    ev.exposure("u3", "2026-01-10T09:00:00", experiment="exp_slo", fa="a1", ua=bot)
    ev.metric("u3", "2026-01-10T10:05:00", "err", 1, ua=bot)
    ev.metric("u3", "2026-01-10T10:06:00", "lat", 5000, ua=bot)
    # u4: never exposed (out)
    ev.metric("u4", "2026-01-10T10:30:00", "err", 1)
    ev.write(data / "raw")
    ingest(data)
    # cautious: skip the relationship tests of models outside the selection (e.g. fct_outcomes)
    dbt(data, "build", "--select", "+agg_cell_slo_hourly", "--indirect-selection", "cautious",
        vars_={"as_of": "2026-01-10"})
    return data


def test_slo_hourly_counts_per_bucket(slo_mart):
    rows = query(slo_mart, "select experiment_id, metric, cell_id, strftime(hour, '%H:%M'), events, bad_events,"
                           " slo_objective, slo_good_below, slo_period_days, slo_key"
                           " from marts.agg_cell_slo_hourly order by metric, cell_id, hour")
    assert rows == [
        ("exp_slo", "err_rate", "fa=a0", "10:00", 2, 1, 0.99, 1.0, 7, "exp_slo:err_rate:fa=a0:2026-01-10 10:00:00"),
        ("exp_slo", "err_rate", "fa=a1", "09:00", 1, 1, 0.99, 1.0, 7, "exp_slo:err_rate:fa=a1:2026-01-10 09:00:00"),
        ("exp_slo", "err_rate", "fa=a1", "10:00", 1, 1, 0.99, 1.0, 7, "exp_slo:err_rate:fa=a1:2026-01-10 10:00:00"),
        ("exp_slo", "err_rate", "fa=a1", "23:00", 1, 0, 0.99, 1.0, 7, "exp_slo:err_rate:fa=a1:2026-01-10 23:00:00"),
        ("exp_slo", "lat_slo", "fa=a0", "11:00", 3, 2, 0.999, 800.0, 28, "exp_slo:lat_slo:fa=a0:2026-01-10 11:00:00"),
    ]
    # the clock-skewed event reached stg_events (it arrived by as_of) and is left out by its ts only
    assert query(slo_mart, "select count(*) from staging.stg_events where unit_id = 'u2'"
                           " and ts >= timestamp '2026-01-11 00:00:00'") == [(1,)]
    with duckdb.connect(str(slo_mart / "wh.duckdb"), read_only=True) as conn:
        hourly = store.slo_hourly(conn)
    assert list(hourly.columns) == list(store.SLO_HOURLY_COLUMNS) and len(hourly) == 5
    burn = budget_burn(load_registry(slo_mart / "registry"), hourly)
    assert set(burn["window_end"]) == {pd.Timestamp("2026-01-11 00:00:00")}
    assert set(burn["status"]) == {"not_judged"}  # a handful of events is never judged
