"""dbt-spark against dbt-duckdb on the same raw data (docs/scale-out.md, "Measured here").

Data: the simulator's telemetry (demo faults) for `--users` units over `--days` days, ingested once
into a DuckDB warehouse and written to the Parquet lake. Each round runs, interleaved, a full
`dbt build` (every model and data test, no earlier build to reuse) on each engine in its own
process: `duckdb` into a copy of the ingested warehouse, `spark` with a fresh Spark warehouse and
metastore (a local session, MVT_SPARK_MASTER, default local[2]; its start-up is part of the time).
Printed: the median seconds per engine and their ratio.

    .venv/bin/python bench/spark_bench.py --users 20000 --days 3 --runs 2 --workdir /tmp/mvt_spark_bench
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mvt_pipeline.config import DBT_PROJECT_DIR, SparkSettings, dbt_executable, settings  # noqa: E402


def prepare(work: Path, users: int, days: int) -> Path:
    import duckdb

    from mvt_pipeline.ingest import ingest_partition
    from mvt_pipeline.ingest.dump_folders import dump_days
    from mvt_pipeline.registry import load_registry
    from mvt_pipeline.registry.warehouse_tables import write_registry_tables
    from mvt_pipeline.simulate import SimulationConfig, simulate
    from mvt_pipeline.simulate.truth import Faults
    from mvt_pipeline.warehouse import lake

    data = work / "data"
    if (work / "ingested.duckdb").exists():
        return data
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(ROOT / "data" / "registry", data / "registry")
    registry = load_registry(data / "registry")
    simulate(registry, SimulationConfig(users=users, days=days, seed=3, start_date=dt.date(2026, 11, 2),
                                        faults=Faults.demo()), data)
    with duckdb.connect(str(work / "building.duckdb")) as conn:
        write_registry_tables(conn, registry)
        for day in dump_days(data / "raw"):
            ingest_partition(conn, data / "raw", day, registry)
        lines = conn.execute("select count(*) from raw.events").fetchone()[0]
        lake.sync_lake(conn, work / "lake")
    (work / "building.duckdb").rename(work / "ingested.duckdb")
    print(f"data: {users} units, {days} days, {lines} accepted lines")
    return data


def build(work: Path, engine: str, round_no: int) -> float:
    run = work / f"{engine}_{round_no}"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir()
    shutil.copy(work / "ingested.duckdb", run / "wh.duckdb")
    s = dataclasses.replace(settings(), duckdb_path=run / "wh.duckdb", warehouse=engine,
                            spark=SparkSettings(lake_dir=work / "lake", warehouse_dir=run / "spark"))
    env = {**os.environ, **s.dbt_environment(), "MVT_DUCKDB_TEMP_DIR": str(run / "tmp"), "DO_NOT_TRACK": "1"}
    cmd = [dbt_executable(), "build", "--target", engine, "--project-dir", str(DBT_PROJECT_DIR),
           "--profiles-dir", str(DBT_PROJECT_DIR), "--target-path", str(run / "target"),
           "--log-path", str(run / "logs")]
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=run, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{engine} build failed:\n{proc.stdout[-4000:]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=20000)
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/mvt_spark_bench"))
    args = ap.parse_args()
    work = args.workdir.resolve()
    prepare(work, args.users, args.days)
    times: dict[str, list[float]] = {"duckdb": [], "spark": []}
    for i in range(args.runs):
        for engine in ("duckdb", "spark") if i % 2 == 0 else ("spark", "duckdb"):
            times[engine].append(build(work, engine, i))
            print(f"round {i + 1}: {engine} {times[engine][-1]:.1f} s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"machine: {platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"median dbt build: duckdb {med['duckdb']:.1f} s, spark {med['spark']:.1f} s "
          f"(spark/duckdb {med['spark'] / med['duckdb']:.1f}x) over {args.runs} runs")


if __name__ == "__main__":
    main()
