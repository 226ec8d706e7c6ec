"""The whole night against its floor, interleaved (issue: a night's cost follows its new data).

Data: the simulator's telemetry (demo faults) for `--days` + 1 days and about `--events` lines over
the first `--days`. Each round runs, every variant in its own process (fresh interpreter, so peak
RSS is per variant; RSS is the sum over the variant's process tree, dbt's included, sampled every
0.2 s):

- `floor_load`: a bare DuckDB `CREATE TABLE AS SELECT * FROM read_json(...)` of the first `--days`;
- `cold`: a fresh data directory: `ingest_day` for every day but the last, then the `nightly` job of
  the last day (ingest + dbt build + effects + HTE + guardrails + reports + audit), as `mvt` runs them;
- `floor_query`: `bench/marts_bench.py`'s hand-written query (the same `agg_cell_stats`) on the
  warehouse the cold night left;
- `incremental`: the day after, added to that data directory, and its `nightly` run;
- `repeat`: that `nightly` run once more, with nothing new: the fixed overhead of a night (Dagster
  and dbt start-up, every model's and test's queries over no new rows, statistics, reports).

floor = floor_load + floor_query. Printed: medians per variant, ratios, peak RSS and the Dagster step
durations of the last round (where the time goes).

    .venv/bin/python bench/night_bench.py --events 1000000 --runs 3 --workdir /tmp/mvt_night_bench
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

PAGE = os.sysconf("SC_PAGE_SIZE")
LINES_PER_USER_DAY = 2.15  # measured: 29,155 users x 7 days of the demo registry -> 439,491 lines


def generate(source: Path, events: int, days: int, seed: int) -> dict:
    """The demo's telemetry sized to about `events` lines, with half the demo's loss (0.5 %): the
    demo's 1 % sits on the loss gate (`loss_error`), which a night of a million lines then fails
    about every other time, and a failed night skips the analysis being measured."""
    from mvt_pipeline.registry import load_registry
    from mvt_pipeline.simulate import Faults, SimulationConfig, simulate

    users = max(1, round(events / (LINES_PER_USER_DAY * days)))
    faults = Faults.demo().model_copy(update={"loss_rate": 0.005})
    return simulate(load_registry(ROOT / "data" / "registry"),
                    SimulationConfig(users=users, days=days, seed=seed, faults=faults), source, log=lambda *a: None)


def _tree(pid: int) -> list[int]:
    """pid and all its descendants (from /proc/<pid>/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except OSError:
            continue
    return out


def _tree_rss(pid: int) -> int:
    total = 0
    for p in _tree(pid):
        try:
            with open(f"/proc/{p}/statm") as fh:
                total += int(fh.read().split()[1]) * PAGE
        except OSError:
            continue
    return total


def _run_child(args: list[str], env: dict) -> dict:
    """Run one variant; returns its JSON result with the process tree's peak RSS."""
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    peak = [0]

    def sample():
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout = proc.stdout.read()
    proc.wait()
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"{args} failed with exit code {proc.returncode}")
    res = json.loads(stdout.strip().splitlines()[-1])
    res["peak_rss_mb"] = round(peak[0] / 2**20)
    return res


def _night_env(run_dir: Path, memory_limit: str) -> dict:
    data = run_dir / "data"
    return {**os.environ, "MVT_DATA_DIR": str(data), "MVT_DUCKDB_PATH": str(data / "warehouse" / "mvt.duckdb"),
            "MVT_REPORTS_DIR": str(data / "reports"), "DAGSTER_HOME": str(run_dir / "dagster_home"),
            "MVT_DUCKDB_MEMORY_LIMIT": memory_limit, "DO_NOT_TRACK": "1", "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
            "GX_ANALYTICS_ENABLED": "false"}


def _link_day(source: Path, data: Path, day: str) -> None:
    """Hard-link one day's dump folders into the run's raw/ (no copy of the bytes)."""
    for folder in sorted((source / "raw").glob(f"*/dt={day}")):
        shutil.copytree(folder, data / "raw" / folder.parent.name / folder.name, copy_function=os.link)


def _step_seconds(instance, run_ids: list[str]) -> dict:
    """Seconds per Dagster step, summed over the runs."""
    steps: dict[str, float] = {}
    for run_id in run_ids:
        for s in instance.get_run_step_stats(run_id):
            steps[s.step_key] = steps.get(s.step_key, 0.0) + (s.end_time or 0) - (s.start_time or 0)
    return {k: round(v, 2) for k, v in steps.items()}


def child_night(kind: str, source: Path, run_dir: Path, days: list[str]) -> dict:
    """cold: every day but the last ingested, then the last day's nightly run; incremental: the
    next day added and its nightly run; repeat: that nightly run again (nothing new)."""
    import dagster as dg

    from mvt_pipeline.nights import ensure_dagster_home, run_job

    data = run_dir / "data"
    started = time.perf_counter()
    ensure_dagster_home()
    instance = dg.DagsterInstance.get()
    night, run_ids = days[-1], []
    if kind == "cold":
        for day in days[:-1]:
            res = run_job("ingest_day", day, instance=instance)
            if not res.success:
                raise SystemExit(f"ingest {day}: {res.error}")
            run_ids.append(res.run_id)
    elif kind == "incremental":
        _link_day(source, data, night)
    res = run_job("nightly", night, instance=instance)
    if not res.success:
        raise SystemExit(f"nightly {night}: {res.error}")
    run_ids.append(res.run_id)
    return {"variant": kind, "seconds": time.perf_counter() - started, "night_run_s": res.seconds,
            "steps": _step_seconds(instance, run_ids)}


def child_floor_query(db: Path, memory_limit: str) -> dict:
    import duckdb

    from marts_bench import hand_written_sql

    with duckdb.connect(str(db)) as conn:
        conn.execute(f"set memory_limit = '{memory_limit}'")
        conn.execute("set TimeZone = 'UTC'")
        conn.execute("create schema if not exists bench")
        started = time.perf_counter()
        conn.execute(hand_written_sql())
        seconds = time.perf_counter() - started
        rows = conn.execute("select count(*) from bench.hand_cell_stats").fetchone()[0]
        # the history's lines, by ingestion's own accounting (rows in = accepted + quarantined)
        lines = conn.execute("select (select count(*) from raw.events) + (select count(*) from raw.quarantine)"
                             ).fetchone()[0]
    return {"variant": "floor_query", "seconds": seconds, "rows": rows, "lines": lines}


def _prepare_run_dir(source: Path, run_dir: Path, days: list[str]) -> None:
    if run_dir.exists():
        shutil.rmtree(run_dir)
    data = run_dir / "data"
    (data / "raw").mkdir(parents=True)
    for sub in ("registry", "flags"):
        if (ROOT / "data" / sub).exists():
            shutil.copytree(ROOT / "data" / sub, data / sub)
    for day in days:
        _link_day(source, data, day)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000, help="lines over the first --days days")
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/mvt_night_bench"))
    ap.add_argument("--memory-limit", default="2GB")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--run-dir", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    source = args.workdir / "source"
    if args.child == "generate":  # in a child: the parent stays small
        generate(source, args.events, args.days, args.seed)
        return
    if args.child:
        days = json.loads(os.environ["MVT_BENCH_DAYS"])
        if args.child in ("cold", "incremental", "repeat"):
            out = child_night(args.child, source, args.run_dir, days)
        elif args.child == "floor_query":
            out = child_floor_query(args.run_dir / "floor.duckdb", args.memory_limit)
        else:
            import ingest_bench

            floor = args.run_dir / "floor_src"
            if floor.exists():
                shutil.rmtree(floor)
            for day in days:
                _link_day(source, floor, day)
            out = ingest_bench.run_variant("read_json_bare", floor, {
                "memory_limit": args.memory_limit, "threads": os.cpu_count() or 2, "tmp": str(args.run_dir)})
            out["variant"] = "floor_load"
        print(json.dumps(out))
        return

    if not (source / "truth.json").exists():
        per_day = args.events / args.days
        t0 = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--child", "generate", "--workdir", str(args.workdir),
                        "--events", str(round(per_day * (args.days + 1))), "--days", str(args.days + 1),
                        "--seed", str(args.seed)], check=True, cwd=ROOT)
        print(f"generated {source} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    from mvt_pipeline.ingest.dump_folders import dump_days

    all_days = dump_days(source / "raw")
    history, extra = all_days[:args.days], all_days[args.days]
    load_at_start = os.getloadavg()
    results: dict[str, list[dict]] = {}
    run_dir = args.workdir / "run"
    for _ in range(args.runs):
        _prepare_run_dir(source, run_dir, history)
        env = _night_env(run_dir, args.memory_limit)
        env["MVT_BENCH_DAYS"] = json.dumps(history)
        common = ["--workdir", str(args.workdir), "--run-dir", str(run_dir), "--memory-limit", args.memory_limit]
        for variant in ("floor_load", "cold"):
            res = _run_child(["--child", variant, *common], env)
            results.setdefault(variant, []).append(res)
            print(json.dumps({k: v for k, v in res.items() if k != "steps"}), file=sys.stderr, flush=True)
        shutil.copy(run_dir / "data" / "warehouse" / "mvt.duckdb", run_dir / "floor.duckdb")
        res = _run_child(["--child", "floor_query", *common], env)
        results.setdefault("floor_query", []).append(res)
        print(json.dumps(res), file=sys.stderr, flush=True)
        env["MVT_BENCH_DAYS"] = json.dumps([*history, extra])
        for variant in ("incremental", "repeat"):
            res = _run_child(["--child", variant, *common], env)
            results.setdefault(variant, []).append(res)
            print(json.dumps({k: v for k, v in res.items() if k != "steps"}), file=sys.stderr, flush=True)

    med = {v: statistics.median(r["seconds"] for r in rs) for v, rs in results.items()}
    floor = med["floor_load"] + med["floor_query"]
    summary = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.python_version()}",
        "load_avg_at_start": load_at_start, "load_avg_at_end": os.getloadavg(),
        "history_days": history, "extra_day": extra, "lines_history": results["floor_query"][-1]["lines"],
        "memory_limit": args.memory_limit, "runs": args.runs,
        "median_s": {v: round(s, 1) for v, s in med.items()},
        "runs_s": {v: [round(r["seconds"], 1) for r in rs] for v, rs in results.items()},
        "peak_rss_mb": {v: max(r["peak_rss_mb"] for r in rs) for v, rs in results.items()},
        "floor_s": round(floor, 1),
        "cold_over_floor": round(med["cold"] / floor, 2),
        "incremental_over_cold": round(med["incremental"] / med["cold"], 2),
        "steps_cold_last_run": results["cold"][-1]["steps"],
        "steps_incremental_last_run": results["incremental"][-1]["steps"],
        "steps_repeat_last_run": results["repeat"][-1]["steps"],
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
