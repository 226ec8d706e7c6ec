"""The code location loads, validates from the CLI, and has the graph the product promises."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from .conftest import PROJECT_ROOT

EXPECTED_ASSETS = {
    "experiment_registry", "raw_events", "stg_events", "stg_exposure_factors", "fct_exposures",
    "fct_outcomes", "fct_unit_metrics", "agg_cell_stats", "dq_assignment", "factorial_effects",
    "decision_reports", "stale_flag_audit", "dq_daily", "agg_cell_quantiles", "hte_effects",
    "agg_cell_slo_hourly", "experiment_decisions", "fct_unit_segments", "int_unit_attributes", "int_unit_metrics",
    "int_unit_slo_hourly", "agg_experiment_exposures", "dq_source_daily", "dq_source_contents",
    "agg_cell_exposures_daily",
}
EXPECTED_PARENTS = {
    "raw_events": {"experiment_registry"},
    "stg_events": {"raw_events"},
    "agg_cell_stats": {"fct_unit_metrics", "fct_unit_segments"},
    "fct_unit_segments": {"int_unit_attributes"},
    "int_unit_attributes": {"fct_exposures", "stg_events", "experiment_registry"},
    "fct_unit_metrics": {"int_unit_metrics"},
    "int_unit_metrics": {"fct_outcomes", "fct_exposures", "stg_events", "experiment_registry"},
    "factorial_effects": {"agg_cell_stats", "dq_assignment"},
    "decision_reports": {"factorial_effects", "experiment_decisions", "hte_effects", "stale_flag_audit",
                         "agg_cell_exposures_daily", "dq_source_daily", "dq_source_contents"},
    "experiment_decisions": {"factorial_effects", "agg_cell_stats", "agg_cell_quantiles", "agg_cell_slo_hourly",
                             "dq_daily"},
    "stale_flag_audit": {"agg_experiment_exposures"},
    "agg_experiment_exposures": {"stg_events"},
    "dq_source_daily": {"stg_events"},
    "dq_source_contents": {"stg_events"},
    "agg_cell_exposures_daily": {"fct_exposures"},
    "agg_cell_slo_hourly": {"int_unit_slo_hourly", "experiment_registry"},
    "int_unit_slo_hourly": {"fct_exposures", "stg_events", "experiment_registry"},
}
EXPECTED_CHECKS = {
    ("experiment_registry", "registry_lint"),
    ("raw_events", "row_accounting"), ("raw_events", "gx_telemetry_schema"), ("raw_events", "quarantine_rate"),
    ("raw_events", "loss_rate"), ("raw_events", "lag_p95"), ("raw_events", "pii_found"), ("raw_events", "volume_change"),
    ("factorial_effects", "srm_check"), ("experiment_decisions", "guardrails"),
    ("experiment_decisions", "business_metrics"), ("stale_flag_audit", "no_stale_flags"),
    ("dq_daily", "loss_rate_matured"), ("dq_assignment", "flip_rate"),
    ("stg_events", "unique_stg_events_event_id"), ("fct_exposures", "unique_fct_exposures_exposure_key"), ("agg_cell_stats", "segments_within_registry"),
}


def test_definitions_load_with_the_full_lineage(workdir):
    from mvt_pipeline.definitions import build_defs

    defs = build_defs()
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == EXPECTED_ASSETS
    for child, parents in EXPECTED_PARENTS.items():
        got = {p.to_user_string() for p in graph.get(dg.AssetKey(child)).parent_keys}
        assert parents <= got, (child, got)
    checks = {(c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys}
    assert EXPECTED_CHECKS <= checks
    nightly = defs.resolve_job_def("nightly")
    assert nightly.partitions_def is not None
    # one night = one partition of every asset (no unpartitioned asset left behind in a backfill)
    for key in graph.get_all_asset_keys():
        assert graph.get(key).partitions_def == nightly.partitions_def, key
    assert {s.name for s in defs.schedules} == {"nightly_schedule"}
    assert {s.name for s in defs.sensors} == {"raw_dump_sensor", "check_failure_alerts", "run_failure_alerts",
                                                "alert_outbox"}
    schedule = defs.resolve_schedule_def("nightly_schedule")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.cron_schedule == "0 3 * * *" and schedule.execution_timezone == "UTC"
    assert schedule.description and all(s.description for s in defs.sensors)


def test_schedule_cron_and_timezone_come_from_the_settings(workdir, monkeypatch):
    import importlib

    import mvt_pipeline.defs.schedules as schedules

    monkeypatch.setenv("MVT_NIGHTLY_CRON", "30 5 * * *")
    monkeypatch.setenv("MVT_NIGHTLY_TIMEZONE", "Europe/Berlin")
    try:
        reloaded = importlib.reload(schedules)
        assert reloaded.nightly_schedule.cron_schedule == "30 5 * * *"
        assert reloaded.nightly_schedule.execution_timezone == "Europe/Berlin"
    finally:
        monkeypatch.undo()
        importlib.reload(schedules)


def test_catalogue_metadata(workdir):
    """Owners, table names and column schemas are in the specs (row counts come with each run)."""
    from mvt_pipeline.definitions import build_defs
    from mvt_pipeline.warehouse.analysis_schema import TABLES

    graph = build_defs().resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.owners, key
    assert "team:team-checkout" in graph.get(dg.AssetKey("factorial_effects")).owners
    raw = graph.get(dg.AssetKey("raw_events")).metadata
    assert raw["dagster/table_name"] == "raw.events"
    assert {c.name for c in raw["dagster/column_schema"].columns} >= {"event_id", "dt", "ingested_at"}
    groups = {graph.get(dg.AssetKey(k)).group_name for k in ("stg_events", "stg_exposure_factors")}
    assert groups == {"staging"}
    assert graph.get(dg.AssetKey("agg_cell_stats")).group_name == "marts"
    assert {graph.get(dg.AssetKey(k)).group_name for k in ("int_unit_attributes", "int_unit_metrics", "int_unit_slo_hourly")} == {"intermediate"}
    assert set(TABLES) >= {"effects", "srm", "cell_bayes", "hte", "hte_heterogeneity", "stale_flags", "decisions",
                           "alerts"}


def test_definitions_load_without_deprecation_warnings(workdir):
    import warnings

    from mvt_pipeline.definitions import build_defs

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_defs().resolve_job_def("nightly")
    ours = [w for w in caught if issubclass(w.category, (DeprecationWarning, UserWarning))
            and "dagster" in str(w.filename) + str(w.message).lower()]
    assert not ours, [str(w.message) for w in ours]


def test_dg_checks_the_project(workdir):
    dg_cli = Path(sys.executable).parent / "dg"
    env = {k: v for k, v in os.environ.items() if k != "PATH"} | {"PATH": "/usr/bin:/bin"}
    proc = subprocess.run([str(dg_cli), "check", "defs"], cwd=PROJECT_ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dagster_cli_validates_the_workspace(workdir):
    dagster = Path(sys.executable).parent / "dagster"
    env = {**os.environ, "PATH": f"{dagster.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_dbt_resource_skips_the_version_subprocess_and_the_adapter(workdir, monkeypatch):
    """dagster-dbt would run `dbt --version` and build an in-process adapter on every invocation;
    ours knows the version from the installed dbt-core and needs no adapter."""
    import importlib.metadata
    import subprocess as sp

    from mvt_pipeline.defs.resources import MvtDbtCliResource, build_resources

    resource = build_resources()["dbt"]
    assert isinstance(resource, MvtDbtCliResource)

    def no_subprocess(*args, **kwargs):
        raise AssertionError(f"subprocess started: {args}")

    monkeypatch.setattr("dagster_dbt.core.resource.check_output", no_subprocess)
    monkeypatch.setattr(sp, "check_output", no_subprocess)
    assert str(resource._cli_version) == importlib.metadata.version("dbt-core")
    assert resource._initialize_dbt_core_adapter(["build"]) is None
