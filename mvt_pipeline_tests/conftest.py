"""Shared fixtures: a dbt manifest prepared once per session, and an isolated data dir, warehouse
and DAGSTER_HOME per test that needs one."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_REGISTRY = PROJECT_ROOT / "data" / "registry"
SAMPLE_FLAGS = PROJECT_ROOT / "data" / "flags"


def _prepare_dbt_manifest() -> None:
    """`@dbt_assets` reads target/manifest.json at import: build it before anything imports defs."""
    from dagster_dbt import DbtProject

    from mvt_pipeline.config import DBT_PROJECT_DIR, dbt_executable

    bin_dir = str(Path(dbt_executable()).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    project = DbtProject(project_dir=DBT_PROJECT_DIR)
    project.preparer.prepare(project)


def pytest_configure(config):
    _prepare_dbt_manifest()


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """A data dir with the sample registry and flags, its own warehouse, reports and DAGSTER_HOME."""
    data = tmp_path / "data"
    shutil.copytree(SAMPLE_REGISTRY, data / "registry")
    shutil.copytree(SAMPLE_FLAGS, data / "flags")
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("MVT_DATA_DIR", str(data))
    monkeypatch.setenv("MVT_DUCKDB_PATH", str(data / "warehouse" / "mvt.duckdb"))
    monkeypatch.setenv("MVT_REPORTS_DIR", str(data / "reports"))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return data
