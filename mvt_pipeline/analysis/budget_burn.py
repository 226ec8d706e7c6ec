"""Error-budget burn per experiment x SLO metric x cell: is a treated cell spending its SLO budget?

Why: an experiment can break a service long before its effect estimate is significant. The check is
the multi-window burn-rate method (Google SRE Workbook, ch. 5 "Alerting on SLOs"): the burn rate
of a window is its bad-event ratio over the allowed one, (bad / events) / (1 - objective), so 1.0
spends the budget exactly over the SLO period; the budget consumed in a window of w hours is
burn_rate * w / (24 * period_days) (burn 14.4 for 1 h of a 30-day budget = 2 %). Short windows
react fast, the long window confirms a sustained burn. A treated cell is paused only when, in a
short window, it spent more than `burn_pause_share` of its budget AND burns faster than the control
cell: when control burns as fast, it is an incident everywhere, not the experiment ('burning').

The input is `marts.agg_cell_slo_hourly` (hourly buckets); the windows are summed here, so they
come from each experiment's `decision_rules`. Pure pandas: no Dagster, no DuckDB.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..registry import Experiment, Registry
from .cells import cell_id, planned_cells

COLUMNS = {  # analysis.budget_burn minus as_of / computed_at: column -> dtype
    "experiment_id": "object", "metric": "object", "cell_id": "object", "is_control": "bool",
    "window_hours": "int64", "short_window": "bool", "window_start": "datetime64[us]",
    "window_end": "datetime64[us]", "events": "int64", "bad_events": "int64", "bad_ratio": "float64",
    "objective": "float64", "period_days": "int64", "burn_rate": "float64", "budget_consumed": "float64",
    "control_burn_rate": "float64", "status": "object",
}
_KEYS = ["experiment_id", "metric", "window_hours"]


def _empty() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in COLUMNS.items()})


def control_cell(experiment: Experiment) -> str:
    """The all-control combination, e.g. 'price=p0|banner=off'."""
    return cell_id({f.name: f.control for f in experiment.factors}, experiment)


def _experiment_windows(registry: Registry, experiment: Experiment, hourly: pd.DataFrame) -> list[pd.DataFrame]:
    """Event sums per (metric, cell) for each burn window of one experiment, every cell included."""
    slo_metrics = [m for m in dict.fromkeys(name for name, _role in experiment.metrics.by_role())
                   if registry.metric(m).slo is not None]
    rows = hourly[(hourly["experiment_id"] == experiment.id) & hourly["metric"].isin(slo_metrics)]
    if not slo_metrics or rows.empty:
        return []
    end = rows["hour"].max() + pd.Timedelta(hours=1)  # end of the latest bucket of the experiment
    cells = sorted(set(planned_cells(experiment)) | set(rows["cell_id"]))
    skeleton = pd.MultiIndex.from_product([slo_metrics, cells], names=["metric", "cell_id"])
    rules = experiment.decision_rules
    out = []
    for hours in rules.burn_windows_hours:
        start = end - pd.Timedelta(hours=hours)
        inside = rows[(rows["hour"] >= start) & (rows["hour"] < end)]
        sums = (inside.groupby(["metric", "cell_id"])[["events", "bad_events"]].sum()
                .reindex(skeleton, fill_value=0).reset_index())
        sums["experiment_id"] = experiment.id
        sums["window_hours"] = hours
        sums["short_window"] = hours in rules.burn_short_windows_hours
        sums["window_start"] = start
        sums["window_end"] = end
        sums["is_control"] = sums["cell_id"] == control_cell(experiment)
        sums["min_events"] = rules.burn_min_events
        sums["pause_share"] = rules.burn_pause_share
        out.append(sums)
    return out


def budget_burn(registry: Registry, hourly: pd.DataFrame) -> pd.DataFrame:
    """One row per (experiment, SLO metric, cell, burn window) of every non-draft experiment with
    SLO events; the window end is the end of the experiment's latest hour bucket. Status:
    'not_judged' (events < burn_min_events), 'pause' (short window, treated cell, budget_consumed >
    burn_pause_share and burn_rate > the control's, or the control is not judged), 'burning'
    (budget_consumed > burn_pause_share otherwise), else 'ok'."""
    if hourly is None or hourly.empty:
        return _empty()
    hourly = hourly.assign(hour=pd.to_datetime(hourly["hour"]))
    parts = [part for e in registry.experiments if e.status != "draft"
             for part in _experiment_windows(registry, e, hourly)]
    if not parts:
        return _empty()
    frame = pd.concat(parts, ignore_index=True)
    slos = {m.name: m.slo for m in registry.metrics if m.slo is not None}
    frame["objective"] = frame["metric"].map({n: s.objective for n, s in slos.items()}).astype(float)
    frame["period_days"] = frame["metric"].map({n: s.period_days for n, s in slos.items()}).astype("int64")
    frame["events"] = frame["events"].astype("int64")
    frame["bad_events"] = frame["bad_events"].astype("int64")
    frame["bad_ratio"] = frame["bad_events"] / frame["events"].where(frame["events"] > 0)
    frame["burn_rate"] = frame["bad_ratio"] / (1.0 - frame["objective"])
    frame["budget_consumed"] = frame["burn_rate"] * frame["window_hours"] / (24.0 * frame["period_days"])
    frame["judged"] = frame["events"] >= frame["min_events"]
    control = frame.loc[frame["is_control"], _KEYS + ["burn_rate", "judged"]].rename(
        columns={"burn_rate": "control_burn_rate", "judged": "control_judged"})
    frame = frame.merge(control, on=_KEYS, how="left")  # no control row: NaN / not judged
    control_judged = frame["control_judged"].eq(True)

    over = frame["budget_consumed"] > frame["pause_share"]  # NaN (no events) is never over
    faster = ~control_judged | (frame["burn_rate"] > frame["control_burn_rate"])
    pause = frame["short_window"] & ~frame["is_control"] & over & faster
    frame["status"] = np.select([~frame["judged"], pause, over], ["not_judged", "pause", "burning"], default="ok")

    frame = frame.sort_values(["experiment_id", "metric", "window_hours", "cell_id"], kind="stable")
    frame = frame[list(COLUMNS)].reset_index(drop=True)
    return frame.astype({c: t for c, t in COLUMNS.items() if c not in ("window_start", "window_end")})
