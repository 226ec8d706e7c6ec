"""History is kept: a night's rows are replaced alone, a table written by an older schema keeps its
nights after an upgrade, and a night is written all or nothing."""

import datetime as dt

import duckdb
import pandas as pd
import pytest

from mvt_pipeline.warehouse import TABLES, ensure_analysis_schema, replace_nights
from mvt_pipeline.warehouse.store import night

N1, N2, N3 = dt.date(2026, 11, 1), dt.date(2026, 11, 2), dt.date(2026, 11, 3)


def _effects(estimate: float, n: int = 2) -> pd.DataFrame:
    return pd.DataFrame({"experiment_id": ["e"] * n, "metric": ["m"] * n, "term": ["a"] * n,
                         "level": [f"l{i}" for i in range(n)], "estimate": [estimate] * n, "status": ["ok"] * n,
                         "cuped": [True] * n, "n_units": [100] * n})


def test_rerun_replaces_only_that_night(tmp_path):
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    for day, est in ((N1, 1.0), (N2, 2.0), (N3, 3.0)):
        replace_nights(conn, {"effects": _effects(est)}, day)
    replace_nights(conn, {"effects": _effects(30.0, n=3)}, N3)
    got = conn.execute("select as_of, count(*), min(estimate), max(estimate) from analysis.effects group by 1 order by 1").fetchall()
    assert got == [(N1, 2, 1.0, 1.0), (N2, 2, 2.0, 2.0), (N3, 3, 30.0, 30.0)]
    # an empty result clears that night only
    replace_nights(conn, {"effects": pd.DataFrame()}, N2)
    assert [r[0] for r in conn.execute("select distinct as_of from analysis.effects order by 1").fetchall()] == [N1, N3]


def test_a_table_of_the_previous_schema_keeps_its_nights(tmp_path):
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    # analysis.effects as an older release wrote it: fewer columns, in another order
    conn.execute("create schema analysis")
    conn.execute("create table analysis.effects (as_of date, experiment_id varchar, metric varchar, term varchar,"
                 " level varchar, estimate double, computed_at timestamp)")
    conn.execute("insert into analysis.effects values ('2026-10-30', 'e', 'm', 'a', 'l0', 0.5, now()),"
                 " ('2026-10-31', 'e', 'm', 'a', 'l0', 0.6, now())")
    replace_nights(conn, {"effects": _effects(3.0)}, N3)
    cols = [r[0] for r in conn.execute("describe analysis.effects").fetchall()]
    assert set(TABLES["effects"].column_names) <= set(cols)
    old = conn.execute("select as_of, estimate, status from analysis.effects where as_of < ? order by 1", [N3]).fetchall()
    assert old == [(dt.date(2026, 10, 30), 0.5, None), (dt.date(2026, 10, 31), 0.6, None)]
    assert len(night(conn, "effects", N3)) == 2
    ensure_analysis_schema(conn)  # idempotent: nothing dropped, nothing added twice
    assert conn.execute("select count(*) from analysis.effects").fetchone()[0] == 4


def test_a_night_is_written_all_or_nothing(tmp_path):
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    srm = pd.DataFrame({"experiment_id": ["e"], "n_units": [10], "passed": [True]})
    replace_nights(conn, {"effects": _effects(1.0), "srm": srm}, N1)
    bad_srm = pd.DataFrame({"experiment_id": ["e"], "n_units": ["not a number"], "passed": [True]})
    with pytest.raises(duckdb.Error):
        replace_nights(conn, {"effects": _effects(9.0), "srm": bad_srm}, N1)
    assert conn.execute("select max(estimate) from analysis.effects where as_of = ?", [N1]).fetchone()[0] == 1.0
    assert conn.execute("select count(*) from analysis.srm where as_of = ?", [N1]).fetchone()[0] == 1


def test_a_column_missing_from_the_schema_is_refused(tmp_path):
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    with pytest.raises(ValueError, match="analysis_schema.py"):
        replace_nights(conn, {"effects": _effects(1.0).assign(surprise=1)}, N1)


def test_marts_of_another_night_are_refused(tmp_path):
    from mvt_pipeline.warehouse import StaleMartsError, require_marts_for

    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    require_marts_for(conn, N1)  # no dbt build yet: nothing to compare
    conn.execute("create schema staging")
    conn.execute("create table staging.stg_events__as_of as select ?::date as as_of", [N2])
    require_marts_for(conn, N2)
    with pytest.raises(StaleMartsError, match="mvt nightly --date 2026-11-03"):
        require_marts_for(conn, N3)
