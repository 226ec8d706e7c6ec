"""`make demo` / `mvt demo`: simulate sample dumps, then run the project's own `nightly` job through
the Dagster instance once per day (so the UI shows `nightly` runs, one partition per night, and the
failed checks raise `analysis.alerts`), and say where the reports are.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import time

from .config import settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=20000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--start-date", default="2026-11-10")
    parser.add_argument("--keep-data", action="store_true", help="reuse existing dumps and warehouse")
    args = parser.parse_args(argv)

    from .ingest.dump_folders import dump_days
    from .nights import NightError, check_night, ensure_dagster_home, run_nights

    s = settings()
    started = time.perf_counter()
    if not args.keep_data:
        for path in (s.raw_dir, s.duckdb_path.parent, s.reports_dir):
            shutil.rmtree(path, ignore_errors=True)
        from .registry import load_registry
        from .simulate import Faults, SimulationConfig, default_truth, simulate

        registry = load_registry(s.registry_dir)
        print(f">> simulating {args.users} users x {args.days} days into {s.raw_dir}", flush=True)
        config = SimulationConfig(users=args.users, days=args.days, seed=args.seed,
                                  start_date=dt.date.fromisoformat(args.start_date),
                                  # 0.5% loss: below the 1% gate, so the sample nights are analysed
                                  faults=Faults.demo().model_copy(update={"loss_rate": 0.005}),
                                  truth=default_truth(registry))
        simulate(registry, config, s.data_dir)

    days = dump_days(s.raw_dir)
    if not days:
        print(f"no dump folders under {s.raw_dir}", file=sys.stderr)
        return 1
    try:
        nights = [check_night(day) for day in days]
    except NightError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    home = ensure_dagster_home()
    print(f">> running the nightly job for {len(nights)} nights ({nights[0]} .. {nights[-1]}), "
          f"DAGSTER_HOME={home}", flush=True)
    results = run_nights(nights, progress=lambda line: print(line, flush=True))

    elapsed = time.perf_counter() - started
    failed = [r.night for r in results if not r.success]
    print(f"\nDone in {elapsed:.0f} s: {len(results) - len(failed)} of {len(results)} nights succeeded, "
          f"{sum(r.alerts for r in results)} alerts raised (analysis.alerts).")
    print(f"  Reports:   {s.reports_dir / 'latest' / 'index.html'}  (night {nights[-1]}; every kept night: "
          f"{s.reports_dir / 'index.html'})")
    print(f"  Warehouse: {s.duckdb_path}  (schemas raw, staging, marts, analysis)")
    print("  UI:        make ui   then open http://127.0.0.1:3000")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
