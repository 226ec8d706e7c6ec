"""The raw tables as Parquet for Spark, and Spark's built marts back into the DuckDB warehouse
(MVT_WAREHOUSE=spark, docs/scale-out.md).

Ingestion validates and accounts each day in DuckDB, as always; on Spark the dbt models read the
raw tables from `lake_dir` instead, laid out the way Spark, Trino and object stores read them:

    <lake_dir>/events/dt=YYYY-MM-DD/part-00000.parquet       (and quarantine/, the same way)
    <lake_dir>/registry_experiments/part-00000.parquet        (each registry table whole)

dbt registers them as the `raw.*` sources (dbt/macros/spark_sources.sql). A day folder also holds
`_mvt_ingested` (what it was written from: the day's row count and last ingestion time; Spark skips
files whose name starts with `_`), so `sync_lake` rewrites just the days that changed. A folder is
written under a temp name and renamed into place.

After dbt, `mirror_marts` copies the small marts the analysis reads (`MIRRORED_MARTS`) from Spark's
warehouse into the DuckDB file in one transaction, so every asset after dbt runs unchanged.
"""

from __future__ import annotations

import datetime as dt
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import duckdb

# The raw tables dbt reads (dbt/models/sources.yml), and whether they are partitioned by `dt`.
LAKE_TABLES: dict[str, bool] = {
    "events": True,
    "quarantine": True,
    "registry_experiments": False,
    "registry_factors": False,
    "registry_levels": False,
    "registry_metrics": False,
    "registry_experiment_metrics": False,
    "registry_experiment_segments": False,
}
PART_FILE = "part-00000.parquet"
MARKER = "_mvt_ingested"

# What the assets after dbt read of the models (mvt_pipeline/warehouse/store.py): schema -> tables,
# each a row per cell, day or experiment. Per-event and per-unit models stay in Spark.
MIRRORED_MARTS: dict[str, tuple[str, ...]] = {
    "marts": ("agg_cell_stats", "agg_cell_quantiles", "agg_cell_slo_hourly", "dq_assignment", "dq_daily",
              "dq_source_daily", "dq_source_contents", "agg_experiment_exposures", "agg_cell_exposures_daily"),
}
AS_OF_TABLE = "staging.stg_events__as_of"  # what store.marts_as_of reads: the night the marts hold


class LakeError(RuntimeError):
    """Spark's output is missing or unreadable (the message names the table and folder)."""


@dataclass(frozen=True)
class SyncSummary:
    days_written: list[str]
    days_removed: list[str]
    registry_tables: int


def _columns(conn: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str]]:
    return conn.execute(
        "select column_name, data_type from information_schema.columns where table_catalog = current_database()"
        " and table_schema = 'raw' and table_name = ? order by ordinal_position", [table]).fetchall()


def _select_list(columns: list[tuple[str, str]]) -> str:
    """Spark has no JSON type (text instead) and reads a Parquet timestamp without a time zone as
    TIMESTAMP_NTZ: the naive UTC times go out as instants, read as TIMESTAMP in a UTC session."""
    parts = []
    for name, kind in columns:
        if name == "dt":
            continue  # the folder name holds it
        quoted = '"' + name.replace('"', '""') + '"'
        if kind == "JSON":
            parts.append(f"cast({quoted} as varchar) as {quoted}")
        elif kind == "TIMESTAMP":
            parts.append(f"cast({quoted} as timestamptz) as {quoted}")
        else:
            parts.append(quoted)
    return ", ".join(parts)


def _replace_folder(final: Path, write) -> None:
    """Write a folder under a temp name beside `final` (`write(tmp)`), then swap it in."""
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex}"
    tmp.mkdir(parents=True)
    try:
        write(tmp)
        old = final.parent / f".{final.name}.old-{uuid.uuid4().hex}"
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _sql_path(path: Path) -> str:
    """A file path as a SQL string literal (COPY takes no parameter for its file)."""
    return "'" + str(path).replace("'", "''") + "'"


def _marker_text(rows: int, last_ingested: dt.datetime | None) -> str:
    return f"{rows}\n{last_ingested.isoformat() if last_ingested else ''}\n"


def _day_state(conn, table: str) -> dict[str, str]:
    rows = conn.execute(f"select cast(dt as varchar), count(*), max(ingested_at) from raw.{table} group by dt").fetchall()
    return {day: _marker_text(n, last) for day, n, last in rows}


def _safe_root(root: Path) -> Path:
    root = Path(root)
    if root.is_symlink():
        raise LakeError(f"{root} is a symlink: the lake folder must be a real folder")
    root.mkdir(parents=True, exist_ok=True)
    return root


def write_day(conn: duckdb.DuckDBPyConnection, lake_dir: Path, day: str) -> None:
    """The day's accepted rows (raw.events) and quarantined lines (raw.quarantine) as Parquet."""
    root = _safe_root(lake_dir)
    day = dt.date.fromisoformat(day).isoformat()  # a date, never a path fragment
    for table, by_day in LAKE_TABLES.items():
        if not by_day:
            continue
        columns = _columns(conn, table)
        state = _day_state(conn, table).get(day, _marker_text(0, None))

        def write(tmp: Path, table=table, columns=columns, state=state) -> None:
            conn.execute(f"copy (select {_select_list(columns)} from raw.{table} where dt = ?) "
                         f"to {_sql_path(tmp / PART_FILE)} (format parquet)", [dt.date.fromisoformat(day)])
            (tmp / MARKER).write_text(state)

        _replace_folder(root / table / f"dt={day}", write)


def write_registry(conn: duckdb.DuckDBPyConnection, lake_dir: Path) -> int:
    root = _safe_root(lake_dir)
    n = 0
    for table, by_day in LAKE_TABLES.items():
        if by_day:
            continue
        columns = _columns(conn, table)
        _replace_folder(root / table, lambda tmp, table=table, columns=columns: conn.execute(
            f"copy (select {_select_list(columns)} from raw.{table}) to {_sql_path(tmp / PART_FILE)} (format parquet)"))
        n += 1
    return n


def _lake_days(root: Path, table: str) -> dict[str, str]:
    out = {}
    folder = root / table
    if not folder.is_dir():
        return out
    for path in folder.iterdir():
        if path.is_dir() and path.name.startswith("dt="):
            marker = path / MARKER
            out[path.name[3:]] = marker.read_text() if marker.is_file() else ""
    return out


def sync_lake(conn: duckdb.DuckDBPyConnection, lake_dir: Path) -> SyncSummary:
    """Make the lake hold what the DuckDB raw tables hold: every registry table, and each day whose
    rows changed since it was written (a new day, a re-ingested one, a warehouse that was on DuckDB
    before); a day no longer in the raw tables is removed."""
    root = _safe_root(lake_dir)
    by_day = [table for table, partitioned in LAKE_TABLES.items() if partitioned]
    states = {table: _day_state(conn, table) for table in by_day}
    present = {table: _lake_days(root, table) for table in by_day}
    days = set().union(*states.values())
    empty = _marker_text(0, None)
    written = sorted(day for day in days
                     if any(present[t].get(day) != states[t].get(day, empty) for t in by_day))
    for day in written:
        write_day(conn, root, day)
    removed = sorted({day for t in by_day for day in present[t] if day not in days})
    for day in removed:
        for t in by_day:
            shutil.rmtree(root / t / f"dt={day}", ignore_errors=True)
    return SyncSummary(written, removed, write_registry(conn, root))


def mirror_marts(conn: duckdb.DuckDBPyConnection, spark_warehouse_dir: Path, as_of: dt.date | str) -> dict[str, int]:
    """Copy `MIRRORED_MARTS` from Spark's warehouse folder (its tables' Parquet files) into the
    DuckDB file in one transaction, and record the night they hold; returns row counts."""
    as_of = as_of if isinstance(as_of, dt.date) else dt.date.fromisoformat(as_of)
    sources = {}
    for schema, tables in MIRRORED_MARTS.items():
        for table in tables:
            folder = Path(spark_warehouse_dir) / f"{schema}.db" / table
            if not any(folder.glob("*.parquet")):
                raise LakeError(f"Spark built no {schema}.{table}: no Parquet files in {folder}")
            sources[(schema, table)] = folder
    counts = {}
    conn.execute("set TimeZone = 'UTC'")
    conn.execute("begin")
    try:
        for (schema, table), folder in sources.items():
            conn.execute(f"create schema if not exists {schema}")
            files = f"{folder}/*.parquet"
            described = conn.execute("describe select * from read_parquet(?)", [files]).fetchall()
            select = ", ".join(
                f'cast("{c[0]}" as timestamp) as "{c[0]}"' if c[1] == "TIMESTAMP WITH TIME ZONE" else f'"{c[0]}"'
                for c in described)
            conn.execute(f'create or replace table {schema}."{table}" as select {select} from read_parquet(?)', [files])
            counts[f"{schema}.{table}"] = conn.execute(f'select count(*) from {schema}."{table}"').fetchone()[0]
        conn.execute("create schema if not exists staging")
        conn.execute(f"create or replace table {AS_OF_TABLE} as select ?::date as as_of", [as_of])
        conn.execute("commit")
    except BaseException:
        conn.execute("rollback")
        raise
    return counts
