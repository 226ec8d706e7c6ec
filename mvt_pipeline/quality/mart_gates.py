"""The gates judged on the marts after dbt (loss of matured days, variant flips): pure functions of
small mart frames, so the Dagster checks stay thin and the rules are tested without Dagster.

Both are rate gates with a sample size (`rate_bounds`): a day / experiment fails only with at least
`Thresholds.min_sample` trials and a lower one-sided `Thresholds.confidence` bound above the
threshold; smaller samples are listed as "too few events to judge"."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from .rate_bounds import FAIL, TOO_FEW, graded, judge_rate
from .telemetry_metrics import ERROR, NOT_MEASURABLE, OK, WARN, Thresholds


def judge_days(days: pd.DataFrame, t: Thresholds = Thresholds()) -> pd.DataFrame:
    """Per day of `dq_daily` (dt, n_sequenced, n_lost, loss_rate, optionally n_events): the loss
    judged with a sample size; a day with events but none sequenced is `not measurable`.

    The trials are the day's sequence positions, n = n_sequenced + n_lost (loss_rate = n_lost / n in
    dq_daily). Adds columns n, lower_bound, threshold and verdict (fail / pass / too few events to
    judge)."""
    out = days.copy()
    n_seq = pd.to_numeric(out["n_sequenced"]).fillna(0)
    n_lost = pd.to_numeric(out["n_lost"]).fillna(0)
    verdicts = [judge_rate(k, n, t.loss_error, min_sample=t.min_sample, confidence=t.confidence,
                           method=t.bound_method) for k, n in zip(n_lost, n_seq + n_lost)]
    out["n"] = [v.n for v in verdicts]
    out["lower_bound"] = [v.lower for v in verdicts]
    out["threshold"] = t.loss_error
    out["verdict"] = [v.verdict for v in verdicts]
    if "n_events" in out:  # events but no sequenced one: the loss of that day cannot be measured
        events = pd.to_numeric(out["n_events"]).fillna(0)
        out.loc[(events > 0) & (n_seq == 0) & (n_lost == 0), "verdict"] = NOT_MEASURABLE
    return out


def not_measurable(judged: pd.DataFrame) -> pd.DataFrame:
    """The judged days with events but no sequenced one (the SDK sends no `seq`): reported (WARN)."""
    return judged[judged["verdict"] == NOT_MEASURABLE]


def matured_days(days: pd.DataFrame, night: dt.date, t: Thresholds = Thresholds()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(days old enough to judge, with their verdicts; those that fail the loss gate). A day is
    judged once it is `late_window_days` older than the night: younger days may still receive late
    events. It fails with at least `min_sample` sequence positions and a lower bound of its loss
    rate above `loss_error` (`judge_days`)."""
    cutoff = pd.Timestamp(night - dt.timedelta(days=t.late_window_days))
    matured = judge_days(days[pd.to_datetime(days["dt"]) <= cutoff], t)
    return matured, matured[matured["verdict"] == FAIL]


def too_few(judged: pd.DataFrame) -> pd.DataFrame:
    """The rows of a judged frame whose sample is below the minimum (reported, not judged)."""
    return judged[judged["verdict"] == TOO_FEW]


def judge_flips(rates: pd.DataFrame, t: Thresholds = Thresholds()) -> pd.DataFrame:
    """Per experiment (experiment_id, flipped, units, flip_rate): status OK / WARN / ERROR from the
    lower bound of flipped / units against flip_warn / flip_error, with n, lower_bound and verdict."""
    out = rates.copy()
    graded_ = [graded(k, n, t.flip_warn, t.flip_error, min_sample=t.min_sample, confidence=t.confidence,
                      method=t.bound_method)
               for k, n in zip(pd.to_numeric(out["flipped"]).fillna(0), pd.to_numeric(out["units"]).fillna(0))]
    out["n"] = [v.n for _, v in graded_]
    out["lower_bound"] = [v.lower for _, v in graded_]
    out["status"] = [s for s, _ in graded_]
    out["verdict"] = [TOO_FEW if v.verdict == TOO_FEW else s for s, v in graded_]
    return out


def flip_status(rates: pd.DataFrame, t: Thresholds = Thresholds()) -> tuple[float, str]:
    """(worst observed flip rate over experiments, OK / WARN / ERROR of the worst judged experiment)."""
    worst = float(rates["flip_rate"].max()) if len(rates) and rates["flip_rate"].notna().any() else 0.0
    statuses = set(judge_flips(rates, t)["status"]) if len(rates) else set()
    return worst, ERROR if ERROR in statuses else WARN if WARN in statuses else OK
