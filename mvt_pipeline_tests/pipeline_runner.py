"""Run the Dagster graph on a generated dataset in a tmp workdir (shared by the asset and e2e tests)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import dagster as dg
import duckdb

from mvt_pipeline.ingest.dump_folders import dump_days
from mvt_pipeline.registry import load_registry
from mvt_pipeline.simulate import SimulationConfig, simulate

INGESTION = ("experiment_registry", "raw_events")


def generate(data_dir: Path, **config) -> dict:
    registry = load_registry(data_dir / "registry")
    config.setdefault("start_date", dt.date(2026, 11, 2))
    truth = simulate(registry, SimulationConfig(**config), data_dir)
    return truth


def run_graph(data_dir: Path, selection_rest=None) -> tuple[list, list]:
    """Ingest every day folder, then materialize the rest of the graph; returns the run results."""
    from mvt_pipeline.defs import build_defs

    defs = build_defs()
    instance = dg.DagsterInstance.ephemeral()
    ingest_results = []
    for day in dump_days(data_dir / "raw"):
        job = dg.define_asset_job("ingest_test", selection=dg.AssetSelection.assets(*INGESTION))
        jdef = dg.Definitions.merge(defs, dg.Definitions(jobs=[job])).resolve_job_def("ingest_test")
        ingest_results.append(jdef.execute_in_process(instance=instance, partition_key=day, raise_on_error=False))
    rest = selection_rest or (dg.AssetSelection.all() - dg.AssetSelection.assets(*INGESTION))
    job = dg.define_asset_job("rest_test", selection=rest)
    jdef = dg.Definitions.merge(defs, dg.Definitions(jobs=[job])).resolve_job_def("rest_test")
    last = dump_days(data_dir / "raw")[-1]
    rest_result = jdef.execute_in_process(instance=instance, tags={"mvt/as_of": last}, raise_on_error=False)
    return ingest_results, [rest_result]


def query(data_dir: Path, sql: str, params=None):
    with duckdb.connect(str(data_dir / "warehouse" / "mvt.duckdb"), read_only=True) as conn:
        return conn.execute(sql, params or []).df()


def read_truth(data_dir: Path) -> dict:
    return json.loads((data_dir / "truth.json").read_text())
