"""One memory cap and one spill directory reach every DuckDB connection the project opens, dbt's
included (issue #20, part 3): `Settings.duckdb_config` is the one source."""

from __future__ import annotations

import json
import os
import subprocess

import duckdb
import pytest

from mvt_pipeline.config import DBT_PROJECT_DIR, dbt_executable, export_dbt_environment, settings

LIMIT = "300MB"


def _expected() -> str:
    """How DuckDB itself reports LIMIT (a connection opened with it directly)."""
    with duckdb.connect(config={"memory_limit": LIMIT}) as conn:
        return conn.execute("select current_setting('memory_limit')").fetchone()[0]


def _settings_of(conn) -> tuple[str, str]:
    return conn.execute("select current_setting('memory_limit'), current_setting('temp_directory')").fetchone()


def test_every_connection_and_dbt_get_the_configured_limit(workdir, monkeypatch):
    from mvt_pipeline.alerts.service import _connect
    from mvt_pipeline.defs.resources import build_resources

    monkeypatch.setenv("MVT_DUCKDB_MEMORY_LIMIT", LIMIT)
    s = settings()
    expected = (_expected(), str(s.duckdb_temp_dir))
    assert s.duckdb_config() == {"memory_limit": LIMIT, "temp_directory": str(s.duckdb_temp_dir)}

    warehouse = build_resources()["duckdb"]
    with warehouse.get_connection() as conn:  # the writers' pool (ingestion, analysis, reports)
        assert _settings_of(conn) == expected
    alerts = _connect(s)  # the alert service's own connection
    try:
        assert _settings_of(alerts) == expected
    finally:
        alerts.close()
    with duckdb.connect(str(s.duckdb_path), read_only=True, config=s.duckdb_config()) as conn:
        assert _settings_of(conn) == expected

    # dbt, a subprocess, reads them from the environment the assets export (dbt/profiles.yml)
    export_dbt_environment(s)
    dbt = dbt_executable()
    proc = subprocess.run(
        [dbt, "show", "--inline", "select current_setting('memory_limit') as m, current_setting('temp_directory') as t",
         "--output", "json", "--log-format", "json", "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir",
         str(DBT_PROJECT_DIR), "--target-path", str(workdir / "dbt_target"), "--log-path", str(workdir / "dbt_logs")],
        env={**os.environ, "DO_NOT_TRACK": "1", "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"},
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    shown = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    previews = [json.loads(e["data"]["preview"]) for e in shown if "preview" in e.get("data", {})]
    assert previews and (previews[0][0]["m"], previews[0][0]["t"]) == expected


def test_dbt_sets_the_spill_directory_once_per_database_not_per_cursor(tmp_path):
    """dbt-duckdb SETs `settings` on every cursor it opens (one per model and thread); once DuckDB
    has spilled, setting temp_directory again, even to the same path, fails ("Cannot switch temporary
    directory"), which failed every model after the first spill of a 10M-line night. The cap and the
    directory go in `config_options`, given once when the database is opened."""
    import yaml

    profile = yaml.safe_load((DBT_PROJECT_DIR / "profiles.yml").read_text())
    output = profile["mvt_pipeline"]["outputs"]["duckdb"]
    assert {"memory_limit", "temp_directory"} <= set(output["config_options"])
    assert not {"memory_limit", "temp_directory"} & set(output.get("settings") or {})

    # the DuckDB behaviour this guards against: a connection that has spilled refuses the SET
    spill = tmp_path / "spill"
    with duckdb.connect(str(tmp_path / "w.duckdb"), config={"memory_limit": "30MB", "temp_directory": str(spill),
                                                           "threads": "1"}) as conn:
        conn.execute("create table t as select md5(range::varchar) as s from range(1500000) order by s")
        assert any(spill.iterdir())  # it spilled
        with pytest.raises(duckdb.Error, match="temporary directory"):
            conn.cursor().execute("set temp_directory = ?", [str(spill)])
