"""The matured-loss gate fails only on days old enough that their late events have arrived."""

import datetime as dt

import duckdb
import pytest
from dagster_duckdb import DuckDBResource

from mvt_pipeline.defs.assets.quality_gates import LATE_WINDOW_DAYS, loss_rate_matured


def _warehouse(tmp_path, rates):
    path = tmp_path / "w.duckdb"
    with duckdb.connect(str(path)) as conn:
        conn.execute("create schema marts")
        conn.execute("create table marts.dq_daily (day date, n_sequenced bigint, n_lost bigint, loss_rate double)")
        start = dt.date(2026, 11, 1)
        for i, rate in enumerate(rates):
            conn.execute("insert into marts.dq_daily values (?, 1000, ?, ?)",
                         [start + dt.timedelta(days=i), int(rate * 1000), rate])
    return DuckDBResource(database=str(path))


@pytest.mark.parametrize("rates, passed", [
    ([0.002, 0.003, 0.004, 0.05, 0.08], True),    # the lossy days are still within the late window
    ([0.002, 0.03, 0.004, 0.001, 0.001], False),  # a matured day lost 3%
])
def test_matured_loss_gate(tmp_path, rates, passed):
    assert LATE_WINDOW_DAYS == 2
    result = loss_rate_matured(duckdb=_warehouse(tmp_path, rates))
    assert result.passed is passed
