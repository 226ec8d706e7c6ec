"""The Dagster code location: one `Definitions` object, loaded by `workspace.yaml`."""

import dagster as dg

from .alert_sensors import check_failure_alerts, run_failure_alerts
from .assets.analysis import factorial_effects
from .assets.audit import stale_flag_audit
from .assets.dbt_models import mvt_dbt_models
from .assets.hte import hte_effects
from .assets.ingestion import raw_events
from .assets.quality_gates import flip_rate, loss_rate_matured
from .assets.registry import experiment_registry
from .assets.reporting import decision_reports
from .jobs import ingest_job, nightly_job, nightly_schedule
from .resources import build_resources
from .sensors import raw_dump_sensor

ASSETS = [experiment_registry, raw_events, mvt_dbt_models, factorial_effects, hte_effects, decision_reports,
          stale_flag_audit]


def build_defs() -> dg.Definitions:
    """Resources resolve paths from the environment when called, so tests can point at tmp dirs."""
    return dg.Definitions(
        assets=ASSETS,
        asset_checks=[loss_rate_matured, flip_rate],
        jobs=[nightly_job, ingest_job],
        schedules=[nightly_schedule],
        sensors=[raw_dump_sensor, check_failure_alerts, run_failure_alerts],
        resources=build_resources(),
        # DuckDB has one writer: run steps one after another in the run's process.
        executor=dg.in_process_executor,
    )


defs = build_defs()
