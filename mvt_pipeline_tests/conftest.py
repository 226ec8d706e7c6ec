"""Shared fixtures: a dbt manifest prepared once per session, and an isolated data dir, warehouse
and DAGSTER_HOME per test that needs one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mvt_pipeline.config import quiet_third_party_telemetry

quiet_third_party_telemetry()

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_REGISTRY = PROJECT_ROOT / "data" / "registry"
SAMPLE_FLAGS = PROJECT_ROOT / "data" / "flags"


def pytest_configure(config):
    """`@dbt_assets` reads target/manifest.json at import: build it before anything imports defs."""
    from mvt_pipeline.nights import prepare_dbt_manifest

    prepare_dbt_manifest()


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """A data dir with the sample registry and flags, its own warehouse, reports and DAGSTER_HOME."""
    return make_workdir(tmp_path, monkeypatch)


def make_workdir(tmp_path: Path, monkeypatch) -> Path:
    """The `workdir` fixture's set-up in `tmp_path` (also for module-scoped fixtures' MonkeyPatch)."""
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
    # dbt reads these through the environment; a test's run must not leak into the next one
    for var in ("MVT_DUCKDB_MEMORY_LIMIT", "MVT_DUCKDB_TEMP_DIR", "MVT_WAREHOUSE", "MVT_DBT_TARGET",
                "MVT_RAW_PARQUET_DIR", "MVT_SPARK_WAREHOUSE_DIR"):
        monkeypatch.delenv(var, raising=False)
    return data
