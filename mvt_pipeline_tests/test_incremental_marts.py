"""Incremental marts by unit (dbt/macros/unit_changes.sql) over several nights of simulated traffic
with duplicates, late events, bots and flips: a night recomputes only the units its new data touched,
yet every table equals a `--full-refresh` build row for row (sums to 1e-9), through a re-ingested
day with lines removed, late copies that move first exposures, and a registry change."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import duckdb
import pytest

from mvt_pipeline.ingest.dump_folders import dump_days
from mvt_pipeline.registry import load_registry

from .test_dbt_incremental import TABLES, columns
from .test_dbt_marts import DBT_DIR, PROJECT_ROOT, dbt, ingest, one, query

PER_UNIT = ["staging.stg_exposure_factors", "marts.fct_exposures", "intermediate.int_unit_attributes",
            "marts.fct_outcomes", "intermediate.int_unit_metrics", "intermediate.int_unit_slo_hourly"]


def _night(data: Path, day: str, **vars_) -> None:
    dbt(data, "run", vars_={"as_of": day, **vars_})


def _q(column: str) -> str:
    return '"' + column + '"'


def _assert_equal_to_full_refresh(data: Path, tmp: Path, name: str, day: str, **vars_) -> None:
    """Exact on every non-float column; floats to 1e-9 relative (a sum's rounding depends on the order)."""
    full = tmp / f"full_{name}"
    full.mkdir()
    shutil.copy(data / "wh.duckdb", full / "wh.duckdb")
    dbt(full, "run", "--full-refresh", vars_={"as_of": day, **vars_})
    with duckdb.connect(str(data / "wh.duckdb"), read_only=True) as conn:
        conn.execute(f"attach '{full / 'wh.duckdb'}' as full_db (read_only)")
        for table in TABLES:
            cols = columns(conn, table)
            exact = [_q(c) for c, t in cols if t not in ("DOUBLE", "FLOAT")]
            floats = [_q(c) for c, t in cols if t in ("DOUBLE", "FLOAT")]
            keys = ", ".join(exact)
            counts = conn.execute(
                f"select (select count(*) from {table}), (select count(*) from full_db.{table}),"
                f" (select count(*) from (select {keys} from {table} except all select {keys} from full_db.{table}))"
            ).fetchone()
            assert counts[0] == counts[1] and counts[2] == 0, (table, counts)
            if not floats:
                continue
            # pair the rows on every exact column (row_number splits rows equal on all of them)
            order = ", ".join(floats)
            numbered = (f"select *, row_number() over (partition by {keys} order by {order}) as _rn from {{rel}}")
            rel_diff = ", ".join(f"abs(coalesce(a.{c}, 0) - coalesce(b.{c}, 0)) / greatest(1e-300, abs(b.{c}))"
                                 for c in floats)
            null_diff = " or ".join(f"((a.{c} is null) <> (b.{c} is null))" for c in floats)
            on = " and ".join(f"a.{c} is not distinct from b.{c}" for c in [*exact, "_rn"])
            worst, null_mismatch, unpaired = conn.execute(
                f"select max(greatest({rel_diff}, 0)), count(*) filter (where {null_diff}), count(*) - count(b._rn)"
                f" from ({numbered.format(rel=table)}) as a"
                f" left join ({numbered.format(rel='full_db.' + table)}) as b on {on}"
            ).fetchone()
            assert (worst or 0) <= 1e-9 and null_mismatch == 0 and unpaired == 0, (table, worst, null_mismatch, unpaired)


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    from mvt_pipeline.simulate import SimulationConfig, simulate
    from mvt_pipeline.simulate.truth import Faults

    data = tmp_path_factory.mktemp("incr_marts")
    shutil.copytree(PROJECT_ROOT / "data" / "registry", data / "registry")
    faults = Faults(duplicate_rate=0.03, late_rate=0.05, bot_share=0.03, flip_rate=0.03)
    config = SimulationConfig(users=600, days=4, seed=11, faults=faults, start_date=dt.date(2026, 11, 2),
                              compress=False, exposure_mode={"pricing_abn": "per_factor"})
    simulate(load_registry(data / "registry"), config, data, log=lambda *_: None)
    return data, dump_days(data / "raw")


def test_nights_recompute_only_touched_units_and_equal_a_full_refresh(nights, tmp_path):
    data, days = nights
    assert len(days) >= 4
    ingest(data, days[:2])
    _night(data, days[1])
    for table in PER_UNIT:  # the first build of each per-unit model covers every unit
        assert one(data, f"select count(*) from {table}__state") == 1

    # Night 3, with every fct_exposures row marked beforehand (a column nothing downstream reads): rows of units the day did not touch must
    # keep the mark (not recomputed), rows of touched units must be recomputed.
    with duckdb.connect(str(data / "wh.duckdb")) as conn:
        conn.execute("create table main.backup as select exposure_key, n_exposure_events from marts.fct_exposures")
        conn.execute("update marts.fct_exposures set n_exposure_events = -1")
    ingest(data, [days[2]])
    _night(data, days[2])
    touched = one(data, "select count(distinct unit_id) from staging.stg_events__unit_changes where change_seq ="
                        " (select max(change_seq) from staging.stg_events__unit_changes)")
    exposed = one(data, "select count(distinct unit_id) from marts.fct_exposures")
    kept = one(data, "select count(distinct unit_id) from marts.fct_exposures where n_exposure_events = -1")
    assert 0 < touched < exposed and kept > 0
    assert one(data, "select count(*) from marts.fct_exposures as x where n_exposure_events = -1 and unit_id in"
                     " (select unit_id from staging.stg_events__unit_changes where change_seq ="
                     " (select max(change_seq) from staging.stg_events__unit_changes))") == 0
    with duckdb.connect(str(data / "wh.duckdb")) as conn:
        conn.execute("update marts.fct_exposures as x set n_exposure_events = b.n_exposure_events from main.backup as b"
                     " where x.exposure_key = b.exposure_key and x.n_exposure_events = -1")
        conn.execute("drop table main.backup")

    # Night 4: a new day, plus day 2 re-delivered with a tenth of its lines gone, plus a late file in
    # day 4 holding earlier-timestamped copies of day-3 exposures under new ids (first exposures move).
    raw_files = sorted((data / "raw").glob(f"*/dt={days[1]}/*.jsonl"))
    for path in raw_files:
        lines = path.read_text().splitlines()
        path.write_text("".join(line + "\n" for i, line in enumerate(lines) if i % 10 != 3))
    late = []
    for path in sorted((data / "raw").glob(f"*/dt={days[2]}/*.jsonl")):
        for line in path.read_text().splitlines():
            event = json.loads(line)
            if event.get("event_type") == "exposure" and len(late) < 40:
                event["event_id"] = f"{event['event_id']}-late"
                event["ts"] = days[0] + event["ts"][10:]
                late.append(json.dumps(event))
    assert late
    late_dir = next((data / "raw").glob(f"*/dt={days[3]}"))
    (late_dir / "late-copies.jsonl").write_text("\n".join(late) + "\n")
    ingest(data, [days[1], days[3]])
    _night(data, days[3])
    _assert_equal_to_full_refresh(data, tmp_path, "night4", days[3])

    # A registry change (a shorter attribution window) and a changed bot var: every unit recomputed.
    with duckdb.connect(str(data / "wh.duckdb")) as conn:
        conn.execute("update raw.registry_experiments set attribution_window_days = 2"
                     " where experiment_id = (select min(experiment_id) from raw.registry_experiments)")
    _night(data, days[3], bot_events_per_day=40)
    _assert_equal_to_full_refresh(data, tmp_path, "registry", days[3], bot_events_per_day=40)
    assert query(data, "select count(*) from staging.stg_events where event_type is null") == [(0,)]

    # An upgrade that changes a model's SQL (here: a comment) recomputes every unit once.
    project = tmp_path / "upgraded_dbt"
    shutil.copytree(DBT_DIR, project, ignore=shutil.ignore_patterns("target", "logs"))
    model = project / "models" / "marts" / "fct_exposures.sql"
    model.write_text(model.read_text() + "\n-- changed by an upgrade\n")
    with duckdb.connect(str(data / "wh.duckdb")) as conn:
        conn.execute("update marts.fct_exposures set n_exposure_events = -1")
    dbt(data, "run", "--select", "fct_exposures", vars_={"as_of": days[3], "bot_events_per_day": 40},
        project_dir=project)
    assert one(data, "select count(*) from marts.fct_exposures where n_exposure_events = -1") == 0


def _failing_tests(data: Path, *args: str, **vars_) -> set[str]:
    """The data tests a dbt invocation failed (it must fail)."""
    with pytest.raises(AssertionError):
        dbt(data, *args, vars_=vars_)
    results = json.loads((data / "dbt_target" / "run_results.json").read_text())["results"]
    return {r["unique_id"].split(".")[2] for r in results if r["status"] in ("fail", "error")}


@pytest.fixture
def two_nights(tmp_path):
    from mvt_pipeline.simulate import SimulationConfig, simulate

    data = tmp_path / "data"
    shutil.copytree(PROJECT_ROOT / "data" / "registry", data / "registry")
    simulate(load_registry(data / "registry"),
             SimulationConfig(users=300, days=3, seed=5, start_date=dt.date(2026, 11, 2), compress=False),
             data, log=lambda *_: None)
    return data, dump_days(data / "raw")


def test_build_tests_check_the_rows_the_build_wrote(two_nights):
    """`dbt build` tests an incremental model on the rows it wrote this build (dbt/macros/tested_rows.sql):
    a bad row the build did not write passes unseen, `dbt test` on its own still finds it, and a bad
    row the build wrote fails the build."""
    data, days = two_nights
    ingest(data, days[:2])
    dbt(data, "build", vars_={"as_of": days[1]})
    ingest(data, [days[2]])
    untouched = one(data, f"select min(unit_id) from marts.fct_exposures where unit_id not in"
                          f" (select unit_id from raw.events where dt = '{days[2]}')")
    with duckdb.connect(str(data / "wh.duckdb")) as conn:
        conn.execute("update marts.fct_exposures set n_cells_seen = null where unit_id = ?", [untouched])
        conn.execute("update staging.stg_events set n_copies = null where unit_id = ?", [untouched])
    dbt(data, "build", vars_={"as_of": days[2]})
    compiled = next((data / "dbt_target" / "run").rglob("not_null_fct_exposures_n_cells_seen.sql")).read_text()
    assert "dbt_batch_id = '" in compiled
    assert "dbt_batch_id" not in next((data / "dbt_target" / "run").rglob(
        "not_null_agg_cell_stats_n_units.sql")).read_text()  # a table: checked whole
    assert {"not_null_fct_exposures_n_cells_seen", "not_null_stg_events_n_copies"} <= _failing_tests(
        data, "test", as_of=days[2])

    # a row this build writes is checked: a bad event type in the new day fails the build
    with duckdb.connect(str(data / "wh.duckdb")) as conn:
        conn.execute("update marts.fct_exposures set n_cells_seen = 1 where unit_id = ?", [untouched])
        conn.execute("update staging.stg_events set n_copies = 1 where unit_id = ?", [untouched])
        # re-delivered (a later ingested_at): the build rereads the day
        conn.execute("update raw.events set event_type = 'bogus', ingested_at = ingested_at + interval 1 hour"
                     f" where event_id = (select min(event_id) from raw.events where dt = '{days[2]}')")
    assert "accepted_values_stg_events_event_type__exposure__metric" in _failing_tests(
        data, "build", as_of=days[2])


def test_first_exposure_fields_equal_a_sort_in_pandas(two_nights):
    """fct_exposures picks firsts with the `first_by` aggregate (portable.sql): checked against a
    sort of the exposure rows in pandas, with NULL fields on some first exposures (they stay NULL:
    never filled from a later exposure) and levels that change within a unit."""
    data, days = two_nights
    ingest(data, days)
    dbt(data, "run", "--select", "stg_events", "stg_exposure_factors", vars_={"as_of": days[-1]})
    with duckdb.connect(str(data / "wh.duckdb")) as conn:
        rows = conn.execute("select * from staging.stg_exposure_factors").df()
        first = rows.sort_values(["ts", "event_id"]).groupby(["experiment_id", "unit_id"]).head(1)
        nulled = first.iloc[::3][["experiment_id", "unit_id", "event_id"]]
        conn.register("nulled", nulled)
        conn.execute("update staging.stg_exposure_factors as f set device = null, country = null from nulled as n"
                     " where f.event_id = n.event_id and f.experiment_id = n.experiment_id")
        # a later exposure of some units shows another level: the first level must stay
        later = rows.sort_values(["ts", "event_id"]).groupby(["experiment_id", "unit_id", "factor"]).tail(1)
        conn.register("later", later.iloc[::4][["event_id", "factor"]])
        conn.execute("update staging.stg_exposure_factors as f set level = level || '_late' from later as l"
                     " where f.event_id = l.event_id and f.factor = l.factor"
                     " and f.event_id not in (select event_id from nulled)")
        rows = conn.execute("select * from staging.stg_exposure_factors").df()
    dbt(data, "run", "--select", "fct_exposures", vars_={"as_of": days[-1]})
    ordered = rows.sort_values(["ts", "event_id", "position"])
    first = ordered.groupby(["experiment_id", "unit_id"]).head(1).set_index(["experiment_id", "unit_id"])
    levels = ordered.groupby(["experiment_id", "unit_id", "factor"]).head(1).sort_values("position")
    cells = levels.assign(kv=levels.factor + "=" + levels.level).groupby(["experiment_id", "unit_id"]).kv.agg("|".join)
    got = query(data, "select experiment_id, unit_id, first_exposure_event_id, device, platform, country,"
                      " is_new_user, cell_id from marts.fct_exposures")
    assert len(got) == len(first) > 100
    nulls = 0
    for exp, unit, event_id, device, platform, country, is_new_user, cell_id in got:
        want = first.loc[(exp, unit)]
        assert event_id == want.event_id
        for value, col in ((device, "device"), (platform, "platform"), (country, "country"),
                           (is_new_user, "is_new_user")):
            expected = None if want[col] is None or want[col] != want[col] else want[col]
            assert value == expected, (exp, unit, col, value, expected)
        nulls += device is None
        assert cell_id == cells.loc[(exp, unit)]
    assert nulls >= len(nulled) > 30
