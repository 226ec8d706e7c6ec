"""Paths and settings from environment variables (DESIGN.md section 7).

Read at call time, not import time, so tests can point each run at a tmp directory.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt"


def _path(var: str, default: Path) -> Path:
    value = os.environ.get(var)
    path = Path(value) if value else default
    if not path.is_absolute():
        path = (Path.cwd() / path).resolve()
    return path


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    duckdb_path: Path
    reports_dir: Path

    @property
    def raw_dir(self) -> Path:
        return self.data_dir / "raw"

    @property
    def registry_dir(self) -> Path:
        return self.data_dir / "registry"

    @property
    def flags_dir(self) -> Path:
        return self.data_dir / "flags"


def settings() -> Settings:
    data_dir = _path("MVT_DATA_DIR", PROJECT_ROOT / "data")
    return Settings(
        data_dir=data_dir,
        duckdb_path=_path("MVT_DUCKDB_PATH", data_dir / "warehouse" / "mvt.duckdb"),
        reports_dir=_path("MVT_REPORTS_DIR", data_dir / "reports"),
    )


def dbt_executable() -> str:
    """The dbt installed beside this Python (a venv not on PATH), else whatever PATH has. Kept out of
    `defs` so the test set-up can find dbt before anything imports `@dbt_assets` (needs the manifest)."""
    local = Path(sys.executable).parent / "dbt"
    return str(local) if local.exists() else (shutil.which("dbt") or "dbt")
