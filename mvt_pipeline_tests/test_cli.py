"""The `mvt` command line: exit codes and one-line errors, and a night through the Dagster instance."""

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
import yaml

from mvt_pipeline.cli import main

from .conftest import PROJECT_ROOT
from .pipeline_runner import generate

MVT = str(Path(sys.executable).parent / "mvt")


def test_the_entry_point_is_installed():
    proc = subprocess.run([MVT, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    for command in ("nightly", "backfill", "lint", "ingest", "demo"):
        assert command in proc.stdout


@pytest.mark.parametrize("argv, says", [
    (["nightly", "--date", "2001-01-01"], "MVT_PARTITIONS_START"),
    (["backfill", "--start", "2026-11-05", "--end", "2026-11-03"], "before --start"),
    (["nightly", "--date", (dt.date.today() + dt.timedelta(days=3)).isoformat()], "not over yet"),
    (["ingest", "--date", "2000-02-02"], "MVT_PARTITIONS_START"),
])
def test_nights_that_cannot_run_say_why(workdir, capsys, argv, says):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1, err


def test_a_malformed_date_is_a_usage_error(workdir, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["nightly", "--date", "11/20/2026"])
    assert exc.value.code == 2
    assert "not a date" in capsys.readouterr().err


def test_an_unusable_setting_is_named(workdir, capsys, monkeypatch):
    monkeypatch.setenv("MVT_DUCKDB_MEMORY_LIMIT", "lots")
    assert main(["nightly", "--date", "2026-11-02"]) == 2
    assert "MVT_DUCKDB_MEMORY_LIMIT" in capsys.readouterr().err


def test_lint_exit_codes(workdir, capsys):
    assert main(["lint", "--date", "2026-11-20"]) == 0 or "ERROR" not in capsys.readouterr().out
    experiments = workdir / "registry" / "experiments.yaml"
    doc = yaml.safe_load(experiments.read_text())
    doc["experiments"][0]["metrics"]["primary"] = ["no_such_metric"]
    experiments.write_text(yaml.safe_dump(doc))
    assert main(["lint", "--date", "2026-11-20"]) == 1
    out = capsys.readouterr().out
    assert "no_such_metric" in out and "ERROR" in out


def test_ingest_and_nightly_run_through_the_dagster_instance(workdir, capsys):
    generate(workdir, users=400, days=1, seed=3)
    day = "2026-11-02"
    assert main(["ingest", "--date", day]) == 0
    assert main(["nightly", "--date", day]) == 0
    out = capsys.readouterr().out
    assert "night 2026-11-02" in out and "ok in" in out
    import dagster as dg

    instance = dg.DagsterInstance.get()  # the workdir's DAGSTER_HOME: the runs are in the UI's instance
    runs = instance.get_runs()
    assert {(r.job_name, r.tags.get("dagster/partition")) for r in runs} == {("ingest_day", day), ("nightly", day)}
    with duckdb.connect(str(workdir / "warehouse" / "mvt.duckdb"), read_only=True) as conn:
        assert conn.execute("select count(*) from analysis.effects where as_of = ?", [day]).fetchone()[0] > 0
        # the night's failed checks (the sample flags include an orphan flag) raised alerts in-run
        alerts = conn.execute("select check_name, partition from analysis.alerts").fetchall()
    assert ("no_stale_flags", day) in alerts


def test_python_dash_m_runs_the_same_cli(workdir):
    env = {**os.environ}
    proc = subprocess.run([sys.executable, "-m", "mvt_pipeline.cli", "nightly", "--date", "1999-12-31"],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "MVT_PARTITIONS_START" in proc.stderr
