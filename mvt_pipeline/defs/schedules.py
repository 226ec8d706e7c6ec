"""The nightly schedule: on by default, cron and timezone from the settings."""

import datetime as dt

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
    # the last complete day (UTC, the partitions' timezone) at the scheduled time, wherever the cron runs
    when = context.scheduled_execution_time or dt.datetime.now(dt.timezone.utc)
    night = (when.astimezone(dt.timezone.utc).date() - dt.timedelta(days=1))
    if night < daily_partitions.start.date():
        return dg.SkipReason(f"no complete day since the partitions' start ({daily_partitions.start.date()})")
    key = night.isoformat()
    return dg.RunRequest(run_key=key, partition_key=key, tags={"mvt/trigger": "schedule"})
