"""The nightly schedule: on by default, cron and timezone from the settings."""

import dagster as dg

from ..config import settings
from .jobs import nightly_job
from .partitions import daily_partitions

_s = settings()


@dg.schedule(job=nightly_job, cron_schedule=_s.nightly_cron, execution_timezone=_s.nightly_timezone,
             default_status=dg.DefaultScheduleStatus.RUNNING,
             description=f"Runs the `nightly` job at '{_s.nightly_cron}' ({_s.nightly_timezone}) for the last "
                         "complete day (MVT_NIGHTLY_CRON, MVT_NIGHTLY_TIMEZONE).")
def nightly_schedule(context: dg.ScheduleEvaluationContext):
    night = daily_partitions.get_last_partition_key(current_time=context.scheduled_execution_time)
    if night is None:
        return dg.SkipReason(f"no complete day since the partitions' start ({daily_partitions.start.date()})")
    return dg.RunRequest(run_key=night, partition_key=night, tags={"mvt/trigger": "schedule"})
