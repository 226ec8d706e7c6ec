"""A night is all or nothing: the analysis steps stage their rows, the reports step publishes every
table in one transaction; a reader sees the previous night or the new one, never a mix, and a run
that fails before publishing leaves the published night as it was."""

import datetime as dt
import gc

import duckdb
import pandas as pd
import pytest

from mvt_pipeline.warehouse import store
from mvt_pipeline.warehouse.store import STAGING_SCHEMA, night, nights_until, publish_night, replace_nights

N1, N2 = dt.date(2026, 11, 1), dt.date(2026, 11, 2)


def _effects(estimate: float, n: int = 2) -> pd.DataFrame:
    return pd.DataFrame({"experiment_id": ["e"] * n, "metric": ["m"] * n, "term": ["a"] * n,
                         "level": [f"l{i}" for i in range(n)], "estimate": [estimate] * n, "status": ["ok"] * n})


def _decisions(label: str) -> pd.DataFrame:
    return pd.DataFrame({"experiment_id": ["e"], "decision": [label]})


def _published(conn, table: str) -> list:
    return conn.execute(f"select as_of, * exclude (as_of, computed_at) from analysis.{table} order by all").fetchall()


def _staged_rows(conn) -> int:
    tables = [r[0] for r in conn.execute("select table_name from information_schema.tables where table_schema = ?",
                                         [STAGING_SCHEMA]).fetchall()]
    return sum(conn.execute(f'select count(*) from {STAGING_SCHEMA}."{t}"').fetchone()[0] for t in tables)


@pytest.fixture
def conn(tmp_path):
    c = duckdb.connect(str(tmp_path / "w.duckdb"))
    replace_nights(c, {"effects": _effects(1.0), "decisions": _decisions("keep running")}, N1)
    replace_nights(c, {"effects": _effects(2.0), "decisions": _decisions("keep running")}, N2)
    yield c
    c.close()


def test_staged_rows_are_invisible_until_the_night_is_published(conn):
    before = (_published(conn, "effects"), _published(conn, "decisions"))
    replace_nights(conn, {"effects": _effects(20.0, n=3)}, N2, stage_key="run-a")
    replace_nights(conn, {"decisions": _decisions("ship A")}, N2, stage_key="run-a")
    # readers of the tables (and of the store without the key) still see the whole previous night
    assert (_published(conn, "effects"), _published(conn, "decisions")) == before
    assert night(conn, "effects", N2)["estimate"].tolist() == [2.0, 2.0]
    # the run itself reads what it staged, and the history it builds its pages from ends with it
    assert night(conn, "effects", N2, "run-a")["estimate"].tolist() == [20.0] * 3
    hist = nights_until(conn, "effects", N2, "run-a")
    assert hist.groupby("as_of")["estimate"].max().tolist() == [1.0, 20.0]
    assert store.table_row_count(conn, "effects", N2, "run-a") == 5  # 2 of N1 + 3 staged for N2
    assert store.table_row_count(conn, "effects") == 4  # what is published now
    published = publish_night(conn, "run-a", N2)
    assert published == {"decisions": 1, "effects": 3}
    assert night(conn, "effects", N2)["estimate"].tolist() == [20.0] * 3
    assert conn.execute("select decision from analysis.decisions where as_of = ?", [N2]).fetchone()[0] == "ship A"
    assert _published(conn, "effects")[:2] == before[0][:2]  # N1 untouched
    assert _staged_rows(conn) == 0


def test_a_staged_empty_frame_clears_the_night_on_publish(conn):
    replace_nights(conn, {"effects": pd.DataFrame()}, N2, stage_key="run-a")
    assert len(night(conn, "effects", N2)) == 2
    assert night(conn, "effects", N2, "run-a").empty
    publish_night(conn, "run-a", N2)
    assert conn.execute("select count(*) from analysis.effects where as_of = ?", [N2]).fetchone()[0] == 0


def test_a_dead_runs_leftovers_are_never_published_and_are_dropped(conn):
    before = _published(conn, "effects")
    replace_nights(conn, {"effects": _effects(99.0)}, N2, stage_key="dead-run")  # crashed before publishing
    assert _published(conn, "effects") == before
    replace_nights(conn, {"decisions": _decisions("ship B")}, N2, stage_key="run-b")
    publish_night(conn, "run-b", N2)
    assert _published(conn, "effects") == before  # the dead run's effects did not leak in
    assert conn.execute("select decision from analysis.decisions where as_of = ?", [N2]).fetchone()[0] == "ship B"
    assert _staged_rows(conn) == 0


def test_a_publish_that_fails_half_way_changes_nothing(conn, monkeypatch):
    before = (_published(conn, "effects"), _published(conn, "decisions"))
    replace_nights(conn, {"effects": _effects(20.0), "decisions": _decisions("ship A")}, N2, stage_key="run-a")
    real = store.table
    calls = []

    def failing(name):
        calls.append(name)
        if len(calls) == 2:  # the second table of the night: the first one is already replaced
            raise RuntimeError("disk full")
        return real(name)

    monkeypatch.setattr(store, "table", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        publish_night(conn, "run-a", N2)
    monkeypatch.setattr(store, "table", real)
    assert (_published(conn, "effects"), _published(conn, "decisions")) == before
    assert night(conn, "effects", N2, "run-a")["estimate"].tolist() == [20.0, 20.0]  # still staged: a retry can publish
    publish_night(conn, "run-a", N2)
    assert conn.execute("select decision from analysis.decisions where as_of = ?", [N2]).fetchone()[0] == "ship A"


def test_staging_follows_an_upgraded_analysis_table(conn):
    # a staging table left by an older release (fewer columns) is rebuilt, not misread
    conn.execute(f"create schema if not exists {STAGING_SCHEMA}")
    conn.execute(f"create table {STAGING_SCHEMA}.effects (as_of date, estimate double, _stage_key varchar)")
    replace_nights(conn, {"effects": _effects(5.0)}, N2, stage_key="run-a")
    publish_night(conn, "run-a", N2)
    assert night(conn, "effects", N2)["estimate"].tolist() == [5.0, 5.0]


def test_a_night_whose_reports_fail_leaves_the_published_night_alone(workdir, monkeypatch):
    """Through Dagster: the first run publishes the night; a re-run whose reports step fails stages
    new rows but publishes none of them (every analysis table keeps the first run's rows)."""
    from mvt_pipeline.defs.assets import reporting

    from .pipeline_runner import generate, query, run_graph

    generate(workdir, users=1500, days=1, seed=3)
    first = run_graph(workdir)
    assert all(r.success for r in first)
    day = first[-1].dagster_run.tags["dagster/partition"]
    tables = ["effects", "srm", "cell_bayes", "hte", "hte_heterogeneity", "stale_flags", "guardrails",
              "budget_burn", "decisions"]
    before = {t: query(workdir, f"select * from analysis.{t} order by all") for t in tables}
    assert len(before["effects"]) and len(before["decisions"])
    assert query(workdir, f"select count(*) as n from information_schema.tables where table_schema = "
                          f"'{STAGING_SCHEMA}' and table_name = 'staged_nights'")["n"][0] == 1
    assert query(workdir, f"select count(*) as n from {STAGING_SCHEMA}.staged_nights")["n"][0] == 0

    def broken(*_args, **_kwargs):
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(reporting, "render_night", broken)
    again = run_graph(workdir, [day])
    assert not again[0].success
    del again
    gc.collect()  # the failed step's traceback held its (closed) connection's database open
    staged = query(workdir, f"select name from {STAGING_SCHEMA}.staged_nights order by 1")["name"].tolist()
    assert {"effects", "decisions", "hte", "stale_flags"} <= set(staged)  # the steps before reports did run
    for t in tables:  # computed_at included: not one row of the failed run reached a table
        pd.testing.assert_frame_equal(query(workdir, f"select * from analysis.{t} order by all"), before[t])
