"""Run the project's own `nightly` job on a generated dataset in a tmp workdir, one partition per
day folder, exactly as `mvt backfill` does (shared by the asset and end-to-end tests)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import dagster as dg
import duckdb

from mvt_pipeline.ingest.dump_folders import dump_days
from mvt_pipeline.nights import run_job, run_nights
from mvt_pipeline.registry import load_registry
from mvt_pipeline.simulate import SimulationConfig, simulate


def generate(data_dir: Path, **config) -> dict:
    registry = load_registry(data_dir / "registry")
    config.setdefault("start_date", dt.date(2026, 11, 2))
    truth = simulate(registry, SimulationConfig(**config), data_dir)
    return truth


def run_graph(data_dir: Path, nights: list[str] | None = None, instance=None) -> list:
    """Every night (default: one per day folder, in order) through the `nightly` job; returns the
    runs' ExecuteInProcessResults."""
    instance = instance or dg.DagsterInstance.ephemeral()
    results = run_nights(nights or dump_days(data_dir / "raw"), instance=instance, progress=lambda _line: None)
    return [r.result for r in results]


def ingest_again(data_dir: Path, instance=None, days: list[str] | None = None) -> list:
    """`ingest_day` runs (ingestion and its checks, no dbt or analysis) for the days (default: every
    day folder); returns the runs' ExecuteInProcessResults."""
    instance = instance or dg.DagsterInstance.ephemeral()
    return [run_job("ingest_day", day, instance=instance).result for day in days or dump_days(data_dir / "raw")]


def query(data_dir: Path, sql: str, params=None):
    with duckdb.connect(str(data_dir / "warehouse" / "mvt.duckdb"), read_only=True) as conn:
        return conn.execute(sql, params or []).df()


def read_truth(data_dir: Path) -> dict:
    return json.loads((data_dir / "truth.json").read_text())
