"""Ingestion benchmark: `ingest_partition` over every day of a simulated `.jsonl.gz` dump vs a bare
DuckDB `CREATE TABLE AS SELECT * FROM read_json(...)` (and read_json with explicit columns) over the
same files. Each variant runs in its own subprocess (fresh file-backed warehouse) so peak RSS is
measured per variant (`ru_maxrss` of that child, via `os.wait4`); the figure reported is the median of the runs.

    .venv/bin/python bench/ingest_bench.py --events 2000000 --runs 3 [--data /tmp/mvt_bench_2m]

The bare baselines need `ignore_errors=true` (the dump holds malformed lines by design), which
means they silently drop lines; ingestion accounts for every one of them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EVENTS_PER_USER_DAY = 4.9  # measured: 70k users x 3 days -> 1.03M lines with the default truth
EXPLICIT_COLUMNS = ("{event_id: 'VARCHAR', event_type: 'VARCHAR', ts: 'TIMESTAMP', received_at: 'TIMESTAMP', "
                    "unit_id: 'VARCHAR', device_id: 'VARCHAR', session_id: 'VARCHAR', seq: 'BIGINT', "
                    "experiment_id: 'VARCHAR', assignment: 'JSON', cell_id: 'VARCHAR', hash_version: 'VARCHAR', "
                    "metric: 'VARCHAR', value: 'DOUBLE', context: 'JSON'}")


def generate(data: Path, events: int, days: int, seed: int) -> dict:
    from mvt_pipeline.registry import load_registry
    from mvt_pipeline.simulate import Faults, SimulationConfig, simulate

    users = max(1, round(events / (EVENTS_PER_USER_DAY * days)))
    faults = Faults(loss_rate=0.01, duplicate_rate=0.02, late_rate=0.01, malformed_rate=0.001, pii_rate=0.001)
    return simulate(load_registry(ROOT / "data" / "registry"),
                    SimulationConfig(users=users, days=days, seed=seed, faults=faults), data, log=lambda *a: None)


def run_variant(variant: str, data: Path, settings: dict) -> dict:
    """Child process body: one timed variant on a fresh warehouse file."""
    import duckdb

    with tempfile.TemporaryDirectory(dir=settings.get("tmp")) as tmp:
        conn = duckdb.connect(str(Path(tmp) / "w.duckdb"))
        conn.execute(f"set memory_limit = '{settings['memory_limit']}'")
        conn.execute(f"set temp_directory = '{tmp}/spill'")
        conn.execute(f"set threads = {settings['threads']}")
        glob = f"{data}/raw/*/*/*.jsonl.gz"
        started = time.perf_counter()
        if variant == "read_json_bare":
            conn.execute(f"create table t as select * from read_json('{glob}', ignore_errors = true)")
            rows = conn.execute("select count(*) from t").fetchone()[0]
        elif variant == "read_json_columns":
            conn.execute(f"create table t as select * from read_json('{glob}', columns = {EXPLICIT_COLUMNS}, "
                         "format = 'newline_delimited', ignore_errors = true)")
            rows = conn.execute("select count(*) from t").fetchone()[0]
        else:
            from mvt_pipeline.ingest import ingest_partition
            from mvt_pipeline.ingest.dump_folders import dump_days
            from mvt_pipeline.registry import load_registry

            registry = load_registry(ROOT / "data" / "registry")
            rows = 0
            for day in dump_days(data / "raw"):
                rows += ingest_partition(conn, data / "raw", day, registry).rows_read
        seconds = time.perf_counter() - started
        conn.close()
    return {"variant": variant, "seconds": seconds, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--data", type=Path, default=None, help="reuse/create the dump here")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--memory-limit", default="2GB")
    ap.add_argument("--variants", default="read_json_bare,read_json_columns,ingest_partition")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    settings = {"threads": args.threads, "memory_limit": args.memory_limit}
    if args.child:
        print(json.dumps(run_variant(args.child, args.data, settings)))
        return
    data = args.data or Path(tempfile.gettempdir()) / f"mvt_bench_{args.events}"
    if not (data / "truth.json").exists():
        # in a child: Linux keeps ru_maxrss across fork+exec, so a big parent would inflate every
        # variant's peak RSS
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import ingest_bench as b; "
                        "b.generate(__import__('pathlib').Path(sys.argv[2]), *map(int, sys.argv[3:]))",
                        str(Path(__file__).parent), str(data), str(args.events), str(args.days), str(args.seed)],
                       check=True, cwd=ROOT)
        print(f"generated {data} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    truth = json.loads((data / "truth.json").read_text())
    load_at_start = os.getloadavg()
    results: dict[str, list[dict]] = {}
    for _ in range(args.runs):
        for variant in args.variants.split(","):
            proc = subprocess.Popen([sys.executable, __file__, "--child", variant, "--data", str(data),
                                     "--threads", str(args.threads), "--memory-limit", args.memory_limit],
                                    stdout=subprocess.PIPE, text=True, cwd=ROOT)
            stdout = proc.stdout.read()
            _pid, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage: per-variant peak RSS
            proc.returncode = os.waitstatus_to_exitcode(status)
            if proc.returncode:
                raise SystemExit(f"{variant} failed with exit code {proc.returncode}")
            res = json.loads(stdout.strip().splitlines()[-1])
            res["peak_rss_mb"] = round(usage.ru_maxrss / 1024)
            results.setdefault(variant, []).append(res)
            print(json.dumps(res), file=sys.stderr)
    base = statistics.median(r["seconds"] for r in results.get("read_json_bare", [{"seconds": float("nan")}]))
    summary = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.python_version()}",
        "load_avg_at_start": load_at_start,
        "load_avg_at_end": os.getloadavg(),
        "lines": truth["counts"]["lines_written"], "files": truth["counts"]["files"],
        "bytes_gz": sum(p.stat().st_size for p in (data / "raw").rglob("*.jsonl.gz")),
        "threads": args.threads, "memory_limit": args.memory_limit, "runs": args.runs,
        "variants": {v: {"median_s": round(statistics.median(r["seconds"] for r in rs), 2),
                         "runs_s": [round(r["seconds"], 2) for r in rs], "rows": rs[0]["rows"],
                         "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
                         "ratio_vs_bare": round(statistics.median(r["seconds"] for r in rs) / base, 2)}
                     for v, rs in results.items()},
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
