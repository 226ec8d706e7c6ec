"""`make demo`: simulate sample dumps, then materialize the whole graph through the Dagster
instance (so the runs show in the UI), and say where the reports are.

Ingestion runs once per day folder found; the rest of the graph runs once, for the last day.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time

from .config import settings


def _materialize(defs, selection, instance, partition_key=None, as_of=None) -> None:
    import dagster as dg

    job = dg.define_asset_job("__demo", selection=selection)
    resolved = dg.Definitions.merge(defs, dg.Definitions(jobs=[job])).resolve_job_def("__demo")
    tags = {"mvt/as_of": as_of} if as_of else None
    # Warnings and errors only on the console: the full event log is in the UI (make ui).
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    result = resolved.execute_in_process(run_config=quiet, instance=instance, partition_key=partition_key,
                                         tags=tags, raise_on_error=False)
    for check in result.get_asset_check_evaluations():
        if not check.passed:
            print(f"   check {check.asset_key.to_user_string()}.{check.check_name}: {check.severity.value}")
    if not result.success:
        raise SystemExit(f"run {result.run_id} failed; see its logs above or in the Dagster UI (make ui)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=20000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--start-date", default="2026-11-10")
    parser.add_argument("--keep-data", action="store_true", help="reuse existing dumps and warehouse")
    args = parser.parse_args(argv)

    s = settings()
    started = time.perf_counter()
    if not args.keep_data:
        for path in (s.raw_dir, s.duckdb_path.parent, s.reports_dir):
            shutil.rmtree(path, ignore_errors=True)
        from .registry import load_registry
        from .simulate import Faults, SimulationConfig, default_truth, simulate

        registry = load_registry(s.registry_dir)
        print(f">> simulating {args.users} users x {args.days} days into {s.raw_dir}", flush=True)
        import datetime as dt

        config = SimulationConfig(users=args.users, days=args.days, seed=args.seed,
                                  start_date=dt.date.fromisoformat(args.start_date),
                                  # 0.5% loss: below the 1% gate, so the sample night is analysed
                                  faults=Faults.demo().model_copy(update={"loss_rate": 0.005}),
                                  truth=default_truth(registry))
        simulate(registry, config, s.data_dir)

    import dagster as dg

    from .defs import defs
    from .ingest.dump_folders import dump_days

    days = dump_days(s.raw_dir)
    if not days:
        print(f"no dump folders under {s.raw_dir}", file=sys.stderr)
        return 1
    instance = dg.DagsterInstance.get()
    for i, day in enumerate(days, 1):
        print(f">> [{i}/{len(days)}] ingesting {day}", flush=True)
        _materialize(defs, dg.AssetSelection.assets("experiment_registry", "raw_events"), instance,
                     partition_key=day)
    print(f">> building marts, effects, reports and the flag audit as of {days[-1]}", flush=True)
    rest = dg.AssetSelection.all() - dg.AssetSelection.assets("experiment_registry", "raw_events")
    _materialize(defs, rest, instance, as_of=days[-1])

    elapsed = time.perf_counter() - started
    print(f"\nDone in {elapsed:.0f} s.")
    print(f"  Reports:   {s.reports_dir / 'index.html'}")
    print(f"  Warehouse: {s.duckdb_path}  (schemas raw, staging, marts, analysis)")
    print("  UI:        make ui   then open http://127.0.0.1:3000")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
