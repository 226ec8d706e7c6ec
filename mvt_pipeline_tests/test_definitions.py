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
}
EXPECTED_PARENTS = {
    "raw_events": {"experiment_registry"},
    "stg_events": {"raw_events"},
    "agg_cell_stats": {"fct_unit_metrics", "experiment_registry"},
    "factorial_effects": {"agg_cell_stats", "dq_assignment"},
    "decision_reports": {"factorial_effects", "hte_effects", "stale_flag_audit"},
    "stale_flag_audit": {"stg_events"},
}
EXPECTED_CHECKS = {
    ("experiment_registry", "registry_lint"),
    ("raw_events", "row_accounting"), ("raw_events", "gx_telemetry_schema"), ("raw_events", "quarantine_rate"),
    ("raw_events", "loss_rate"), ("raw_events", "lag_p95"), ("raw_events", "pii_found"), ("raw_events", "volume_change"),
    ("factorial_effects", "srm_check"), ("factorial_effects", "guardrails"), ("stale_flag_audit", "no_stale_flags"),
    ("dq_daily", "loss_rate_matured"), ("dq_assignment", "flip_rate"),
    ("stg_events", "unique_stg_events_event_id"), ("fct_exposures", "unique_fct_exposures_exposure_key"),
}


def test_definitions_load_with_the_full_lineage(workdir):
    from mvt_pipeline.defs import build_defs

    defs = build_defs()
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == EXPECTED_ASSETS
    for child, parents in EXPECTED_PARENTS.items():
        got = {p.to_user_string() for p in graph.get(dg.AssetKey(child)).parent_keys}
        assert parents <= got, (child, got)
    checks = {(c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys}
    assert EXPECTED_CHECKS <= checks
    assert defs.resolve_job_def("nightly").partitions_def is not None
    assert {s.name for s in defs.schedules} == {"nightly_schedule"}
    assert {s.name for s in defs.sensors} == {"raw_dump_sensor", "check_failure_alerts", "run_failure_alerts"}


def test_dagster_cli_validates_the_workspace(workdir):
    dagster = Path(sys.executable).parent / "dagster"
    env = {**os.environ, "PATH": f"{dagster.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
