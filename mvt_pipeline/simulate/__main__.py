"""python -m mvt_pipeline.simulate --users N --days D --seed S --out DIR [...]"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from ..config import PROJECT_ROOT
from ..registry import RegistryError, load_registry
from .simulation import simulate
from .truth import Faults, SimulationConfig


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mvt_pipeline.simulate", description=__doc__)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True, help="writes OUT/raw/... and OUT/truth.json")
    ap.add_argument("--registry", type=Path, default=None,
                    help="registry dir (default: OUT/registry if it exists, else <repo>/data/registry)")
    ap.add_argument("--start-date", type=dt.date.fromisoformat, default=dt.date(2026, 11, 1))
    ap.add_argument("--no-faults", action="store_true", help="clean telemetry (default: the demo fault mix)")
    ap.add_argument("--plain-jsonl", action="store_true", help="write .jsonl instead of .jsonl.gz")
    args = ap.parse_args(argv)
    registry_dir = args.registry or (args.out / "registry" if (args.out / "registry").is_dir() else PROJECT_ROOT / "data" / "registry")
    try:
        registry = load_registry(registry_dir)
    except RegistryError as exc:
        print(exc, file=sys.stderr)
        return 2
    config = SimulationConfig(
        users=args.users, days=args.days, seed=args.seed, start_date=args.start_date,
        faults=Faults() if args.no_faults else Faults.demo(), compress=not args.plain_jsonl,
    )
    simulate(registry, config, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
