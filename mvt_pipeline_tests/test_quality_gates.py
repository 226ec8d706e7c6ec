"""The matured-loss gate fails only on days old enough that their late events have arrived (judged
from the night, not from the newest data), and the flip gate grades the worst experiment. Both judge
a rate with a sample size (the exact cases of that rule: test_gate_bounds.py)."""

import datetime as dt

import pandas as pd
import pytest

from mvt_pipeline.quality.mart_gates import flip_status, matured_days
from mvt_pipeline.quality.telemetry_metrics import Thresholds

START = dt.date(2026, 11, 1)


def _days(rates):  # 1000 delivered events a day: a 3 % day is judged and confidently above 1 %
    return pd.DataFrame({"dt": pd.to_datetime([START + dt.timedelta(days=i) for i in range(len(rates))]),
                         "n_sequenced": 1000, "n_lost": [int(r * 1000) for r in rates], "loss_rate": rates})


@pytest.mark.parametrize("rates, night_offset, passed", [
    ([0.002, 0.003, 0.004, 0.05, 0.08], 4, True),    # the lossy days are still within the late window
    ([0.002, 0.03, 0.004, 0.001, 0.001], 4, False),  # a matured day lost 3%
    ([0.002, 0.03, 0.004, 0.001, 0.001], 2, True),   # night 3 (a backfill): day 2 is not matured yet
])
def test_matured_loss_gate(rates, night_offset, passed):
    assert Thresholds().late_window_days == 2
    _matured, bad = matured_days(_days(rates), START + dt.timedelta(days=night_offset))
    assert bad.empty is passed


@pytest.mark.parametrize("flipped, status", [(5, "OK"), (50, "WARN"), (150, "ERROR")])
def test_flip_rate_gate(flipped, status):
    units = 1000
    # the gate needs the counts, not only the rate: 5 % of 1000 units is confidently above 1 %
    rates = pd.DataFrame({"experiment_id": ["e", "f"], "flipped": [flipped, 0], "units": [units, units],
                          "flip_rate": [flipped / units, 0.0]})
    worst, got = flip_status(rates)
    assert worst == flipped / units and got == status
