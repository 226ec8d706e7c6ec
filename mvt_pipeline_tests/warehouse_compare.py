"""Row-for-row comparison of a model built on DuckDB with the same model built on Spark (its
Parquet files in Spark's warehouse folder): same rows, strings, dates and flags equal, numbers equal
to 1e-9 relative (sums in another order differ in the last bits), times equal to the microsecond."""

from __future__ import annotations

import math
from pathlib import Path

import duckdb
import pandas as pd

# which build wrote a row: differs by design between two builds
IGNORED_COLUMNS = frozenset({"dbt_batch_id"})
RTOL = 1e-9


def spark_table(spark_warehouse: Path, relation: str) -> pd.DataFrame:
    schema, name = relation.split(".")
    files = Path(spark_warehouse) / f"{schema}.db" / name
    assert any(files.glob("*.parquet")), f"Spark wrote no Parquet for {relation} in {files}"
    with duckdb.connect() as conn:
        conn.execute("set TimeZone = 'UTC'")
        frame = conn.execute("select * from read_parquet(?)", [f"{files}/*.parquet"]).df()
    for col in frame.columns:  # Spark's timestamps are instants; DuckDB's models hold naive UTC times
        if isinstance(frame[col].dtype, pd.DatetimeTZDtype):
            frame[col] = frame[col].dt.tz_convert("UTC").dt.tz_localize(None)
    return frame


def duckdb_table(database: Path, relation: str) -> pd.DataFrame:
    with duckdb.connect(str(database), read_only=True) as conn:
        return conn.execute(f"select * from {relation}").df()


def _cell(value):
    """A value as compared: None for every kind of missing, floats as floats, the rest as text."""
    if value is None or (not isinstance(value, (list, dict)) and pd.isna(value)):
        return None
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hasattr(value, "item") and not isinstance(value, str):  # numpy scalars
        return _cell(value.item())
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return str(value)


def _sort_key(row: tuple) -> tuple:
    return tuple((0, "") if v is None else (1, f"{v:.8g}") if isinstance(v, float) else (2, v) for v in row)


def _rows(frame: pd.DataFrame, columns: list[str]) -> list[tuple]:
    rows = [tuple(_cell(v) for v in row) for row in frame[columns].itertuples(index=False, name=None)]
    return sorted(rows, key=_sort_key)


def _equal(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=RTOL, abs_tol=0.0) or (math.isnan(a) and math.isnan(b))
    return a == b


def differences(duck: pd.DataFrame, spark: pd.DataFrame, limit: int = 5, ignore: frozenset = frozenset()) -> list[str]:
    """What differs between the two builds of one model (empty: equal row for row); `ignore`: more
    columns that differ by design (e.g. ingestion times of two separately ingested copies)."""
    ignored = IGNORED_COLUMNS | ignore
    columns = [c for c in duck.columns if c not in ignored]
    missing = sorted(set(columns) - set(spark.columns))
    extra = sorted(set(spark.columns) - set(duck.columns) - ignored)
    if missing or extra:
        return [f"columns only on DuckDB {missing}, only on Spark {extra}"]
    if len(duck) != len(spark):
        return [f"{len(duck)} rows on DuckDB, {len(spark)} on Spark"]
    out = []
    for a, b in zip(_rows(duck, columns), _rows(spark, columns)):
        bad = [f"{c}: {x!r} vs {y!r}" for c, x, y in zip(columns, a, b) if not _equal(x, y)]
        if bad:
            out.append("; ".join(bad))
            if len(out) >= limit:
                break
    return out
