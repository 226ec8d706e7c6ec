"""The gates judged on the marts after dbt (loss of matured days, variant flips): pure functions of
small mart frames, so the Dagster checks stay thin and the rules are tested without Dagster."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from .telemetry_metrics import ERROR, OK, WARN, Thresholds


def matured_days(days: pd.DataFrame, night: dt.date, t: Thresholds = Thresholds()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(days old enough to judge, those above the loss threshold). A day is judged once it is
    `late_window_days` older than the night: younger days may still receive late events."""
    cutoff = pd.Timestamp(night - dt.timedelta(days=t.late_window_days))
    matured = days[pd.to_datetime(days["dt"]) <= cutoff]
    return matured, matured[matured["loss_rate"] > t.loss_error]


def flip_status(rates: pd.DataFrame, t: Thresholds = Thresholds()) -> tuple[float, str]:
    """(worst flip rate over experiments, OK / WARN / ERROR)."""
    worst = float(rates["flip_rate"].max()) if len(rates) and rates["flip_rate"].notna().any() else 0.0
    return worst, ERROR if worst > t.flip_error else WARN if worst > t.flip_warn else OK
