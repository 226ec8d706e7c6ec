"""`mvt`: the command line for cron, CI and terminals (docs/architecture.md §12).

Exit codes: 0 done, 1 a night failed or the lint found errors, 2 the command was asked wrongly
(bad date, a night outside the partitions, unusable setting): one line on stderr says what to change.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from .config import SettingsError, settings


def _cmd_nightly(args) -> int:
    from .nights import check_night, ensure_dagster_home, run_nights

    night = check_night(args.date)
    ensure_dagster_home()
    results = run_nights([night], force=args.force)
    return 0 if all(r.success for r in results) else 1


def _cmd_backfill(args) -> int:
    from .nights import ensure_dagster_home, nights_between, run_nights

    nights = nights_between(args.start, args.end)
    ensure_dagster_home()
    results = run_nights(nights, force=args.force)
    failed = [r.night for r in results if not r.success]
    print(f"{len(results) - len(failed)} of {len(results)} nights succeeded" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def _cmd_ingest(args) -> int:
    from .nights import check_night, ensure_dagster_home, run_job

    night = check_night(args.date)
    ensure_dagster_home()
    res = run_job("ingest_day", night, force=args.force)
    for check in res.failed_checks:
        print(f"   check failed: {check}")
    print(f"ingest {night}: {'ok' if res.success else 'FAILED: ' + (res.error or '')} in {res.seconds:.0f} s, run {res.run_id}")
    return 0 if res.success else 1


def _cmd_lint(args) -> int:
    from .audit import FlagFileError, load_flag_files
    from .registry.lint import lint_registry_dir

    s = settings()
    try:
        flags = load_flag_files(s.flags_dir) if s.flags_dir.exists() else []
    except FlagFileError as exc:
        print(f"flag files unreadable ({exc}); flag rules skipped", file=sys.stderr)
        flags = None
    today = dt.date.fromisoformat(args.date) if args.date else dt.datetime.now(dt.timezone.utc).date()
    findings = lint_registry_dir(s.registry_dir, flags, today)
    if findings.empty:
        print(f"registry {s.registry_dir}: no findings")
        return 0
    print(findings.to_string(index=False))
    errors = int((findings["severity"] == "ERROR").sum())
    print(f"{errors} errors, {len(findings) - errors} warnings")
    return 1 if errors else 0


def _cmd_validate_dump(args) -> int:
    import json
    from pathlib import Path

    from .ingest.dump_check import DumpCheckError, format_report, validate_dump
    from .registry import RegistryError, load_registry

    registry_dir = Path(args.registry) if args.registry else settings().registry_dir
    try:
        registry = load_registry(registry_dir)
        report = validate_dump([Path(p) for p in args.paths], registry, examples_per_reason=args.examples,
                               source_format=args.format)
    except (DumpCheckError, RegistryError) as exc:
        print(f"mvt validate-dump: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.as_dict(), indent=2, default=str) if args.json else format_report(report))
    return 1 if report.rows_quarantined else 0


def _cmd_demo(args) -> int:
    from . import demo

    argv = ["--users", str(args.users), "--days", str(args.days), "--seed", str(args.seed),
            "--start-date", args.start_date] + (["--keep-data"] if args.keep_data else [])
    return demo.main(argv)


def _cmd_setup(args) -> int:
    from .nights import ensure_dagster_home, prepare_dbt_manifest

    print(f"DAGSTER_HOME={ensure_dagster_home()} (telemetry off, one warehouse writer at a time)")
    print(f"dbt manifest: {prepare_dbt_manifest()}")
    return 0


def _date(text: str) -> str:
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mvt", description="Nightly analysis of factorial experiments.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("nightly", help="run one night (the `nightly` job the schedule runs)")
    p.add_argument("--date", required=True, type=_date, help="the night (YYYY-MM-DD): data up to that day")
    p.add_argument("--force", action="store_true", help="re-read the day's files even if unchanged")
    p.set_defaults(func=_cmd_nightly)

    p = sub.add_parser("backfill", help="run a range of nights in order")
    p.add_argument("--start", required=True, type=_date)
    p.add_argument("--end", required=True, type=_date)
    p.add_argument("--force", action="store_true", help="re-read every day's files even if unchanged")
    p.set_defaults(func=_cmd_backfill)

    p = sub.add_parser("ingest", help="ingest one day's dump folders only (the `ingest_day` job)")
    p.add_argument("--date", required=True, type=_date)
    p.add_argument("--force", action="store_true", help="re-read the day's files even if unchanged")
    p.set_defaults(func=_cmd_ingest)

    p = sub.add_parser("lint", help="check the registry and flag files; exit 1 on errors")
    p.add_argument("--date", type=_date, help="judge end dates as of this day (default: today, UTC)")
    p.set_defaults(func=_cmd_lint)

    p = sub.add_parser("validate-dump", help="check sample dump files as a night would ingest them; exit 1 if any "
                                             "line is quarantined")
    p.add_argument("paths", nargs="+", metavar="PATH", help="dump files (.jsonl[.gz], .ndjson[.gz], .csv[.gz], "
                                                            ".parquet) or folders holding them")
    p.add_argument("--registry", metavar="DIR", help="the registry folder (default: MVT_DATA_DIR/registry)")
    p.add_argument("--format", default="contract", choices=["contract", "growthbook", "segment", "otel"],
                   help="what the SDK writes (as in sources.yaml; default: the project's contract)")
    p.add_argument("--examples", type=int, default=3, help="examples shown per reason (default 3)")
    p.add_argument("--json", action="store_true", help="the report as JSON")
    p.set_defaults(func=_cmd_validate_dump)

    p = sub.add_parser("demo", help="simulate sample dumps and run every night through Dagster")
    p.add_argument("--users", type=int, default=20000)
    p.add_argument("--days", type=int, default=7)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--start-date", default="2026-11-10", type=_date)
    p.add_argument("--keep-data", action="store_true", help="reuse the existing dumps and warehouse")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("setup", help="prepare DAGSTER_HOME and the dbt manifest (make does this)")
    p.set_defaults(func=_cmd_setup)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .nights import NightError

    try:
        return args.func(args)
    except (NightError, SettingsError) as exc:
        print(f"mvt {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mvt {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
