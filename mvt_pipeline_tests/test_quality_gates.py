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


@pytest.mark.parametrize("flipped, passed, severity", [(5, True, "WARN"), (50, False, "WARN"), (150, False, "ERROR")])
def test_flip_rate_gate(tmp_path, flipped, passed, severity):
    from mvt_pipeline.defs.assets.quality_gates import flip_rate

    path = tmp_path / "w.duckdb"
    with duckdb.connect(str(path)) as conn:
        conn.execute("create schema marts")
        conn.execute("create table marts.dq_assignment (experiment_id varchar, cell_id varchar, n_exposed bigint,"
                     " n_bots bigint, n_flipped bigint)")
        conn.execute("insert into marts.dq_assignment values ('e', 'a=1', 600, 100, ?), ('e', 'a=2', 500, 0, 0)",
                     [flipped])
    result = flip_rate(duckdb=DuckDBResource(database=str(path)))
    assert result.passed is passed
    assert result.severity.value == severity
