"""The Parquet lake that MVT_WAREHOUSE=spark reads, and the mirror of Spark's marts into DuckDB
(mvt_pipeline/warehouse/lake.py), without Spark: the files are read back with DuckDB."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import duckdb
import pytest
import yaml

from mvt_pipeline.config import SettingsError, settings
from mvt_pipeline.warehouse import lake

from .conftest import PROJECT_ROOT
from .test_dbt_marts import ingest, make_hand_made


@pytest.fixture
def ingested(tmp_path) -> Path:
    data = tmp_path / "data"
    make_hand_made(data)
    ingest(data)
    return data


def _read(path: Path) -> list[tuple]:
    with duckdb.connect() as conn:
        conn.execute("set TimeZone = 'UTC'")
        return conn.execute("select * from read_parquet(?, hive_partitioning = true) order by all",
                            [str(path)]).fetchall()


def test_the_lake_tables_are_the_raw_sources_dbt_reads():
    sources = yaml.safe_load((PROJECT_ROOT / "dbt" / "models" / "sources.yml").read_text())["sources"]
    raw = next(s for s in sources if s["name"] == "raw")
    assert {t["name"] for t in raw["tables"]} == set(lake.LAKE_TABLES)
    partitioned = {t["name"] for t in raw["tables"] if t.get("meta", {}).get("partitioned_by_dt")}
    assert partitioned == {t for t, by_day in lake.LAKE_TABLES.items() if by_day}


def test_the_mirror_holds_every_mart_the_analysis_reads():
    store = (PROJECT_ROOT / "mvt_pipeline" / "warehouse" / "store.py").read_text()
    read = set(re.findall(r"\bmarts\.([a-z_]+)", store))
    assert read and read <= set(lake.MIRRORED_MARTS["marts"])
    assert set(re.findall(r"\bstaging\.([a-z_]+)", store)) == {lake.AS_OF_TABLE.split(".")[1]}


def test_sync_writes_every_row_once_by_day_with_spark_types(ingested):
    root = ingested / "lake"
    with duckdb.connect(str(ingested / "wh.duckdb")) as conn:
        summary = lake.sync_lake(conn, root)
        days = [str(d) for (d,) in conn.execute("select distinct dt from raw.events order by 1").fetchall()]
        events = conn.execute("select event_id, ts, assignment::varchar, dt from raw.events order by all").fetchall()
        quarantined = conn.execute("select count(*) from raw.quarantine").fetchone()[0]
        registry = conn.execute("select count(*) from raw.registry_factors").fetchone()[0]
    assert summary.days_written == days and summary.days_removed == [] and summary.registry_tables == 6
    assert sorted(p.name for p in (root / "events").iterdir()) == [f"dt={d}" for d in days]
    with duckdb.connect() as conn:
        conn.execute("set TimeZone = 'UTC'")
        files = str(root / "events" / "*" / "*.parquet")
        kinds = dict(conn.execute("select column_name, column_type from "
                                  "(describe select * from read_parquet(?, hive_partitioning = false))",
                                  [files]).fetchall())
        got = conn.execute("select event_id, cast(ts as timestamp), assignment, dt from "
                           "read_parquet(?, hive_partitioning = true) order by all", [files]).fetchall()
    # Spark reads instants as TIMESTAMP and has no JSON type; the day is the folder, not a column
    assert kinds["ts"] == "TIMESTAMP WITH TIME ZONE" and kinds["assignment"] == "VARCHAR" and "dt" not in kinds
    assert got == events
    assert quarantined > 0 and len(_read(root / "quarantine" / "*" / "*.parquet")) == quarantined
    assert len(_read(root / "registry_factors" / "*.parquet")) == registry


def test_sync_rewrites_only_what_changed_and_drops_vanished_days(ingested):
    root = ingested / "lake"
    with duckdb.connect(str(ingested / "wh.duckdb")) as conn:
        first = lake.sync_lake(conn, root)
        assert lake.sync_lake(conn, root).days_written == []
        day = first.days_written[0]
        # a re-ingested day (new ingested_at) and a day that is no longer there
        conn.execute("update raw.events set ingested_at = ingested_at + interval 1 hour where dt = ?", [day])
        gone = first.days_written[-1]
        conn.execute("delete from raw.events where dt = ?", [gone])
        conn.execute("delete from raw.quarantine where dt = ?", [gone])
        again = lake.sync_lake(conn, root)
        n = conn.execute("select count(*) from raw.events").fetchone()[0]
    assert again.days_written == [day] and again.days_removed == [gone]
    assert not (root / "events" / f"dt={gone}").exists()
    assert len(_read(root / "events" / "*" / "*.parquet")) == n
    assert not [p for p in root.rglob(".*")]  # no temp folder left behind


def test_a_symlinked_lake_is_refused(ingested, tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    link = ingested / "lake"
    link.symlink_to(target)
    with duckdb.connect(str(ingested / "wh.duckdb")) as conn, pytest.raises(lake.LakeError, match="symlink"):
        lake.sync_lake(conn, link)


def _spark_like_table(warehouse: Path, relation: str, sql: str) -> None:
    """What Spark leaves for a table: a folder of Parquet files, its times as instants."""
    schema, name = relation.split(".")
    folder = warehouse / f"{schema}.db" / name
    folder.mkdir(parents=True)
    with duckdb.connect() as conn:
        conn.execute("set TimeZone = 'UTC'")
        conn.execute(f"copy ({sql}) to '{folder / 'part-00000-x.snappy.parquet'}' (format parquet)")


def test_mirror_copies_the_marts_in_one_transaction_with_duckdb_types(tmp_path):
    spark = tmp_path / "spark"
    for table in lake.MIRRORED_MARTS["marts"]:
        _spark_like_table(spark, f"marts.{table}",
                          "select 'e1' as experiment_id, 3::bigint as n, "
                          "timestamptz '2026-01-10 10:00:00.123+00' as seen_at")
    db = tmp_path / "wh.duckdb"
    with duckdb.connect(str(db)) as conn:
        counts = lake.mirror_marts(conn, spark, "2026-01-10")
        kinds = dict(conn.execute("select column_name, data_type from information_schema.columns "
                                  "where table_schema = 'marts' and table_name = 'agg_cell_stats'").fetchall())
        seen_at = conn.execute("select seen_at from marts.agg_cell_stats").fetchone()[0]
        as_of = conn.execute(f"select as_of from {lake.AS_OF_TABLE}").fetchone()[0]
    assert counts == {f"marts.{t}": 1 for t in lake.MIRRORED_MARTS["marts"]}
    assert kinds["seen_at"] == "TIMESTAMP" and seen_at == dt.datetime(2026, 1, 10, 10, 0, 0, 123000)
    assert as_of == dt.date(2026, 1, 10)


def test_a_mart_spark_did_not_build_fails_the_mirror_and_keeps_the_previous_night(tmp_path):
    spark = tmp_path / "spark"
    for table in lake.MIRRORED_MARTS["marts"][1:]:  # the first one is missing
        _spark_like_table(spark, f"marts.{table}", "select 1 as n")
    with duckdb.connect(str(tmp_path / "wh.duckdb")) as conn:
        conn.execute("create schema marts")
        conn.execute(f"create table marts.{lake.MIRRORED_MARTS['marts'][1]} as select 42 as n")
        with pytest.raises(lake.LakeError, match=lake.MIRRORED_MARTS["marts"][0]):
            lake.mirror_marts(conn, spark, "2026-01-10")
        assert conn.execute(f"select n from marts.{lake.MIRRORED_MARTS['marts'][1]}").fetchall() == [(42,)]


def test_the_warehouse_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("MVT_DATA_DIR", str(tmp_path))
    for var in ("MVT_WAREHOUSE", "MVT_DUCKDB_PATH", "MVT_RAW_PARQUET_DIR", "MVT_SPARK_WAREHOUSE_DIR"):
        monkeypatch.delenv(var, raising=False)
    duck = settings().dbt_environment()
    assert settings().warehouse == "duckdb" and duck["MVT_DBT_TARGET"] == "duckdb"
    assert "MVT_RAW_PARQUET_DIR" not in duck  # nothing of Spark's reaches a DuckDB night's environment
    monkeypatch.setenv("MVT_WAREHOUSE", "Spark")
    s = settings()
    env = s.dbt_environment()
    assert s.on_spark and env["MVT_DBT_TARGET"] == "spark"
    assert env["MVT_RAW_PARQUET_DIR"] == str(tmp_path / "lake" / "raw")
    assert env["MVT_SPARK_WAREHOUSE_DIR"] == str(tmp_path / "warehouse" / "spark")
    assert Path(env["MVT_SPARK_LOG4J_CONFIG"]).is_file()
    assert s.dbt_target_dir.name == "dbt_target_spark"  # partial parsing keeps one profile per folder
    monkeypatch.setenv("MVT_WAREHOUSE", "snowflake")
    with pytest.raises(SettingsError, match="MVT_WAREHOUSE"):
        settings()


def test_a_missing_spark_fails_where_it_is_required_and_skips_elsewhere(monkeypatch):
    from .test_spark import require_spark

    monkeypatch.setenv("MVT_REQUIRE_SPARK", "1")
    with pytest.raises(pytest.fail.Exception, match="pyspark.*not installed"):
        require_spark(find=lambda name: None)
    monkeypatch.delenv("MVT_REQUIRE_SPARK")
    with pytest.raises(pytest.skip.Exception, match="make install-spark"):
        require_spark(find=lambda name: None)
