"""The dbt asset never leaves a dbt process behind when reading its events fails."""

import subprocess
import sys

import pytest


class _Invocation:
    def __init__(self, process):
        self.process = process

    def stream(self):
        yield "first event"
        raise RuntimeError("an event for a node the manifest does not know")


def test_a_failing_event_stream_kills_dbt():
    from mvt_pipeline.defs.assets.dbt_models import dbt_events

    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        with pytest.raises(RuntimeError, match="does not know"):
            dbt_events(_Invocation(process))
        assert process.poll() is not None  # killed and reaped, not left holding the warehouse
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_finished_stream_is_returned_whole():
    from mvt_pipeline.defs.assets.dbt_models import dbt_events

    class Done(_Invocation):
        def stream(self):
            yield from ("a", "b")

    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    assert dbt_events(Done(process)) == ["a", "b"]
