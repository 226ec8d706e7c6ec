"""Incremental stg_events: partitions ingested day by day (with a cross-day re-send whose later copy
was received first, and an old partition re-ingested with a line removed) give exactly the tables a
full refresh gives."""

from __future__ import annotations

import datetime as dt
import shutil

import duckdb
import pytest

from .test_dbt_marts import HAND_VARS, dbt, ingest, iso, make_hand_made, one, query

TABLES = ["staging.stg_events", "staging.stg_exposure_factors", "marts.fct_exposures", "intermediate.int_unit_attributes",
          "marts.fct_unit_segments", "marts.fct_outcomes", "intermediate.int_unit_metrics", "marts.fct_unit_metrics",
          "marts.agg_cell_stats", "marts.agg_cell_quantiles", "intermediate.int_unit_slo_hourly",
          "marts.agg_cell_slo_hourly", "marts.dq_assignment",
          "marts.dq_daily", "marts.dq_source_daily", "marts.dq_source_contents", "marts.agg_experiment_exposures",
          "marts.agg_cell_exposures_daily"]
# when and by which build a row was (re)computed, and the unit an id had before: differ by design
BOOKKEEPING = {"ingested_watermark", "dbt_batch_id", "prior_unit_id"}


def columns(conn, table: str) -> list[tuple[str, str]]:
    """(name, type) of a warehouse table's columns, bookkeeping left out."""
    schema, name = table.split(".")
    return [(c, t) for c, t in conn.execute(
        "select column_name, data_type from information_schema.columns where table_catalog = current_database()"
        " and table_schema = ? and table_name = ? order by ordinal_position", [schema, name]).fetchall()
        if c not in BOOKKEEPING]


def _diff_rows(inc_path, full_path, table: str) -> int:
    with duckdb.connect(str(inc_path), read_only=True) as conn:
        conn.execute(f"attach '{full_path}' as full_db (read_only)")
        cols = [c for c, _type in columns(conn, table)]
        sel = ", ".join(f'"{c}"' for c in cols)
        return conn.execute(
            f"select count(*) from ((select {sel} from {table} except all select {sel} from full_db.{table})"
            f" union all (select {sel} from full_db.{table} except all select {sel} from {table}))"
        ).fetchone()[0]


def test_incremental_runs_equal_full_refresh(tmp_path):
    data = tmp_path
    ev = make_hand_made(data)
    raw = data / "raw"

    ingest(data, ["2026-01-09", "2026-01-10"])
    dbt(data, "run", vars_=HAND_VARS)
    first_rows = one(data, "select count(*) from staging.stg_events")
    ingest(data, ["2026-01-11"])
    dbt(data, "run", vars_=HAND_VARS)
    # only the new partition's ids were recomputed: the first batch keeps its watermark
    assert one(data, "select count(*) from staging.stg_events where ingested_watermark = "
                     "(select min(ingested_watermark) from staging.stg_events)") == first_rows - 1
    ingest(data, ["2026-01-12", "2026-01-17"])
    dbt(data, "run", vars_=HAND_VARS)

    # A late file lands in the 01-12 folder with a copy of u3's exposure (from 01-10) that was
    # received FIRST, and the 01-10 dump is re-delivered without u3's pre-exposure buy.
    u3_exposure = one(data, "select event_id from staging.stg_events where unit_id = 'u3' and event_type = 'exposure'")
    u3_buy = one(data, "select event_id from staging.stg_events where unit_id = 'u3' and event_type = 'metric'")
    late = raw / "web_sdk" / "dt=2026-01-12" / "late.jsonl"
    original = [line for day, _f, line in ev.lines if f'"event_id": "{u3_exposure}"' in line][0]
    late.write_text(original.replace(iso("2026-01-10T09:00:00", 1000), iso("2026-01-10T09:00:00", 10)) + "\n")
    day10 = raw / "web_sdk" / "dt=2026-01-10" / "events.jsonl"
    day10.write_text("".join(line + "\n" for line in day10.read_text().splitlines()
                             if f'"event_id": "{u3_buy}"' not in line))
    ingest(data, ["2026-01-10", "2026-01-12"])
    dbt(data, "run", vars_=HAND_VARS)

    assert query(data, f"select dt, n_copies, received_at from staging.stg_events where event_id = '{u3_exposure}'") == [
        (dt.date(2026, 1, 12), 2, dt.datetime(2026, 1, 10, 9, 0, 0, 10000))]
    assert one(data, f"select count(*) from staging.stg_events where event_id = '{u3_buy}' or event_type is null") == 0
    assert one(data, "select covariate from marts.fct_unit_metrics where unit_id = 'u3' and metric = 'conv'") == 0

    full = tmp_path / "full"
    full.mkdir()
    shutil.copy(data / "wh.duckdb", full / "wh.duckdb")
    dbt(full, "run", "--full-refresh", vars_=HAND_VARS)
    assert one(full, "select count(*) from staging.stg_events") == one(data, "select count(*) from staging.stg_events")
    diffs = {t: _diff_rows(data / "wh.duckdb", full / "wh.duckdb", t) for t in TABLES}
    assert diffs == {t: 0 for t in TABLES}

    # a run with nothing new changes nothing
    before = query(data, "select count(*), max(ingested_watermark) from staging.stg_events")
    dbt(data, "run", "--select", "stg_events", vars_=HAND_VARS)
    assert query(data, "select count(*), max(ingested_watermark) from staging.stg_events") == before


def test_incremental_runs_follow_a_moving_as_of(tmp_path):
    """Back to an earlier night and forward again, incrementally: each build equals a full refresh of
    that night, and an earlier night sees no row of a later day."""
    data = tmp_path / "inc"
    data.mkdir()
    make_hand_made(data)
    ingest(data)
    dbt(data, "run", vars_=HAND_VARS)  # every day (no as_of)
    days = [r[0] for r in query(data, "select distinct dt from raw.events order by 1")]
    assert len(days) >= 3
    for as_of in (days[1], days[0], days[-1]):  # back, further back, then forward
        night_vars = {**HAND_VARS, "as_of": as_of.isoformat()}
        dbt(data, "run", vars_=night_vars)
        assert one(data, "select max(dt) from staging.stg_events") <= as_of
        assert one(data, "select max(day) from marts.dq_daily") <= as_of
        assert one(data, "select as_of from staging.stg_events__as_of") == as_of
        full = tmp_path / f"full_{as_of}"
        full.mkdir(exist_ok=True)
        shutil.copy(data / "wh.duckdb", full / "wh.duckdb")
        dbt(full, "run", "--full-refresh", vars_=night_vars)
        diffs = {t: _diff_rows(data / "wh.duckdb", full / "wh.duckdb", t) for t in TABLES}
        assert diffs == {t: 0 for t in TABLES}, as_of


def test_a_malformed_as_of_is_refused(tmp_path):
    make_hand_made(tmp_path)
    ingest(tmp_path)
    env_vars = {**HAND_VARS, "as_of": "2026-01-10' or 1=1 --"}
    with pytest.raises(AssertionError, match="must be a date"):
        dbt(tmp_path, "run", "--select", "stg_events", vars_=env_vars)
