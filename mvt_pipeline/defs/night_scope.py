"""Whether a step stages its analysis rows for the night or writes them straight to the tables.

A run that includes the reports asset ends by publishing the whole night in one transaction
(`store.publish_night`), so every analysis step before it stages its rows under the run's key; a run
that does not (one asset materialized by hand) writes directly, as there is nobody to publish.
"""

from __future__ import annotations

PUBLISHING_STEP = "decision_reports"  # the step that publishes the night (defs/assets/reporting.py)


def stage_key(context) -> str | None:
    """The key this run stages the night under, or None when this run does not publish the night.
    The root run's id, so a re-execution from failure publishes what its parent staged."""
    run = context.run
    steps = run.step_keys_to_execute
    if not context.job_def.has_node_named(PUBLISHING_STEP) or (steps is not None and PUBLISHING_STEP not in steps):
        return None
    return run.root_run_id or run.run_id
