import os

import dagster as dg

from mvt_pipeline.defs.sensors import raw_dump_sensor


def _write(workdir, day, name="a.jsonl", text="{}\n"):
    folder = workdir / "raw" / "web_sdk" / f"dt={day}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)


def test_new_and_changed_dump_folders_start_ingestion_runs(workdir):
    _write(workdir, "2026-11-02")
    _write(workdir, "2026-11-03")
    ctx = dg.build_sensor_context(cursor=None)
    requests = raw_dump_sensor(ctx)
    assert sorted(r.partition_key for r in requests) == ["2026-11-02", "2026-11-03"]
    ctx = dg.build_sensor_context(cursor=ctx.cursor)
    assert isinstance(raw_dump_sensor(ctx), dg.SkipReason)
    _write(workdir, "2026-11-03", name="b.jsonl")
    ctx2 = dg.build_sensor_context(cursor=ctx.cursor)
    requests = raw_dump_sensor(ctx2)
    assert [r.partition_key for r in requests] == ["2026-11-03"]
    assert requests[0].run_key.startswith("2026-11-03:")


def test_folders_outside_the_partition_range_are_skipped(workdir):
    _write(workdir, "2001-01-01")
    result = raw_dump_sensor(dg.build_sensor_context(cursor=None))
    assert isinstance(result, dg.SkipReason)


def test_nightly_schedule_materializes_yesterday(workdir):
    import datetime as dt

    from mvt_pipeline.definitions import build_defs

    defs = build_defs()
    schedule = defs.resolve_schedule_def("nightly_schedule")
    repo = defs.get_repository_def()
    ctx = dg.build_schedule_context(scheduled_execution_time=dt.datetime(2026, 11, 24, 3, 0, tzinfo=dt.timezone.utc),
                                    repository_def=repo)
    data = schedule.evaluate_tick(ctx)
    assert [r.partition_key for r in data.run_requests] == ["2026-11-23"]
    assert schedule.job_name == "nightly"
    # 00:30 in Berlin is still the previous day in UTC: the last complete UTC day is two days back
    berlin = dt.datetime(2026, 11, 24, 0, 30, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    data = schedule.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=berlin, repository_def=repo))
    assert [r.partition_key for r in data.run_requests] == ["2026-11-22"]
