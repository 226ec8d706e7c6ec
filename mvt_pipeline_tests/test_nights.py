"""Backfill correctness: night N re-run after later days arrived equals night N of a warehouse that
only ever saw the days up to N, and the later nights' history survives the re-run."""

import shutil

import dagster as dg
import duckdb
import pandas as pd
import pytest

from mvt_pipeline.ingest.dump_folders import dump_days
from mvt_pipeline.nights import run_job
from mvt_pipeline.simulate import Faults

from .conftest import SAMPLE_FLAGS, SAMPLE_REGISTRY
from .test_dbt_incremental import BOOKKEEPING as WAREHOUSE_BOOKKEEPING
from .pipeline_runner import generate

NIGHT_TABLES = {  # table -> its key columns (rows compared after sorting by them)
    "effects": ["experiment_id", "metric", "term", "level"],
    "srm": ["experiment_id"],
    "cell_bayes": ["experiment_id", "metric", "cell_id"],
    "hte": ["experiment_id", "metric", "segment_variable", "term", "level", "segment"],
    "hte_heterogeneity": ["experiment_id", "metric", "segment_variable", "term", "level"],
    "stale_flags": ["flag_key"],
    "decisions": ["experiment_id"],
}
BOOKKEEPING = {"computed_at", "report_path", *WAREHOUSE_BOOKKEEPING}


def _night(db, table: str, as_of: str) -> pd.DataFrame:
    with duckdb.connect(str(db), read_only=True) as conn:
        frame = conn.execute(f'select * from analysis."{table}" where as_of = ?', [as_of]).df()
    keep = [c for c in frame.columns if c not in BOOKKEEPING]
    return frame[keep].sort_values(NIGHT_TABLES[table]).reset_index(drop=True)


def _assert_frames_equal(a: pd.DataFrame, b: pd.DataFrame, what: str) -> None:
    assert list(a.columns) == list(b.columns) and len(a) == len(b), what
    for col in a.columns:
        if pd.api.types.is_float_dtype(a[col]):
            x, y = a[col].to_numpy(float), b[col].to_numpy(float)
            same = (pd.isna(x) & pd.isna(y)) | (abs(x - y) <= 1e-9 * (1 + abs(y)))
            assert same.all(), (what, col)
        else:
            assert a[col].astype(str).tolist() == b[col].astype(str).tolist(), (what, col)


def _data_dir(root, name, monkeypatch):
    data = root / name / "data"
    shutil.copytree(SAMPLE_REGISTRY, data / "registry")
    shutil.copytree(SAMPLE_FLAGS, data / "flags")
    monkeypatch.setenv("MVT_DATA_DIR", str(data))
    monkeypatch.setenv("MVT_DUCKDB_PATH", str(data / "warehouse" / "mvt.duckdb"))
    monkeypatch.setenv("MVT_REPORTS_DIR", str(data / "reports"))
    return data


def _night_ok(job: str, night: str, instance) -> None:
    result = run_job(job, night, instance=instance)
    assert result.success, (job, night, result.error)


def test_backfilled_night_equals_a_warehouse_that_only_saw_its_days(tmp_path, monkeypatch):
    instance = dg.DagsterInstance.ephemeral()
    # A: every day of the dumps arrives, the newest night runs, then night 3 is re-run (backfill).
    full = _data_dir(tmp_path, "full", monkeypatch)
    generate(full, users=2500, days=4, seed=21, faults=Faults(duplicate_rate=0.02, late_rate=0.004, flip_rate=0.005))  # late: under the loss gate
    days = dump_days(full / "raw")
    assert len(days) >= 5
    night = days[2]
    for day in days:
        _night_ok("ingest_day", day, instance)
    _night_ok("nightly", days[-1], instance)
    newest_before = {t: _night(full / "warehouse" / "mvt.duckdb", t, days[-1]) for t in ("effects", "srm")}
    _night_ok("nightly", night, instance)

    # B: a warehouse that only ever saw the days up to the night.
    only = _data_dir(tmp_path, "only", monkeypatch)
    for day in days[:3]:
        for src in (full / "raw").iterdir():
            if (src / f"dt={day}").exists():
                shutil.copytree(src / f"dt={day}", only / "raw" / src.name / f"dt={day}")
    for day in days[:2]:
        _night_ok("ingest_day", day, instance)
    _night_ok("nightly", night, instance)

    a, b = full / "warehouse" / "mvt.duckdb", only / "warehouse" / "mvt.duckdb"
    assert len(_night(a, "effects", night)) > 0
    for table in NIGHT_TABLES:
        _assert_frames_equal(_night(a, table, night), _night(b, table, night), table)
    # the marts themselves now hold night 3 in both warehouses (sums to 1e-9: DuckDB adds in parallel)
    for t in ("staging.stg_events", "marts.fct_exposures", "marts.agg_cell_stats", "marts.dq_daily"):
        frames = []
        for db in (a, b):
            with duckdb.connect(str(db), read_only=True) as conn:
                frame = conn.execute(f"select * from {t}").df().drop(columns=list(BOOKKEEPING), errors="ignore")
            keys = [c for c in frame.columns if not pd.api.types.is_float_dtype(frame[c])]
            frames.append(frame.sort_values(keys).reset_index(drop=True))
        _assert_frames_equal(*frames, t)
    # and the newest night's history is untouched by the backfill
    for table, before in newest_before.items():
        _assert_frames_equal(_night(a, table, days[-1]), before, f"{table} of {days[-1]}")
