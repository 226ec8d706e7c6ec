"""One decision per experiment and night, with the rule that fired and the numbers it read.

Rules, in order; the first that fires decides (docs/decisions.md has a worked example):

1. `invalid`: sample ratio mismatch, a failed blocking data check of the night, or telemetry lag
   (p95 of received_at - ts of the night's dump) above `max_telemetry_lag_hours`.
2. `pause`: a treated cell consumed more than `burn_pause_share` of its error budget in a short
   window while burning faster than the control cell (`budget_burn.py`), before any statistics.
3. `stop_harm`: a guardrail row is `harm` (`guardrails.py`). When the harm is concentrated in one
   combination, `cell` names it with all its levels; when several cells harm and all contain a
   level that harms on its own, `cell` is that level (one flag variant to turn off); otherwise the
   most harmful combination.
4. `keep_running` (rule `min_units`): the smallest cell has fewer than `min_units_per_cell` units.
5. `ship`: among treated cells whose guardrail rows are all `ok`, the best *combination* on the
   first primary metric that beats the control cell (one-sided, Holm across treated cells).
6. `stop_futility`: with an `mde`, every treated cell's interval on the primary metric lies below
   the MDE (the effect that would be worth shipping is ruled out).
7. `keep_running` with `days_needed` (power at the MDE from the current standard error and the
   traffic so far), or `conclude_no_effect` past the end date.

Tests use the decision basis (always-valid unless `decision_basis: fixed`). Business metrics that
degrade (a primary or secondary metric significantly worse in some cell, Holm) are listed in
`degradations`: they do not decide, they raise a ticket.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..registry import Experiment, Registry
from ..stats import holm, one_sided_p_value, sequential_ci
from ..stats.power import _multiplier as power_multiplier
from ..units import fmt_diff, fmt_level
from .cell_contrasts import cell_levels, control_cell, experiment_contrasts
from .guardrails import method_of
from .srm_table import SRM_ALPHA

DECISIONS = ("invalid", "pause", "stop_harm", "ship", "stop_futility", "keep_running", "conclude_no_effect")
DECISION_COLUMNS = ["experiment_id", "decision", "label", "cell", "flag_key", "variant", "flags", "rule",
                    "inputs", "days_needed", "reasons", "degradations", "report_path", "primary_metric",
                    "primary_cell", "primary_control_value", "primary_estimate", "primary_ci_low", "primary_ci_high",
                    "primary_interval", "guardrail_status", "days_running"]
GUARDRAIL_RANK = {"ok": 0, "inconclusive": 1, "harm": 2}


@dataclass
class NightFacts:
    """What the rules read about one experiment's night besides its estimates."""

    srm: dict | None = None  # {"p_value", "passed"} or None (not enough data)
    failed_blocking_checks: list[str] = field(default_factory=list)
    lag_p95_seconds: float | None = None
    min_cell_units: int | None = None


def _num(x):
    """JSON-safe number (NaN -> None), rounded for reading."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return None
    if isinstance(x, (np.integer, int)):
        return int(x)
    return float(f"{float(x):.6g}")


def flags_of(experiment: Experiment, cell: str) -> dict[str, str]:
    """{flag key (or factor name without one): variant} of a cell or a `factor=level`."""
    levels = cell_levels(cell)
    return {(f.flag_key or f.name): levels[f.name] for f in experiment.factors if f.name in levels}


def _changed(experiment: Experiment, cell: str) -> tuple[str | None, str | None]:
    """(flag keys, variants) of the non-control levels of a cell, comma-joined in factor order."""
    levels = cell_levels(cell)
    changed = [(f.flag_key or f.name, levels[f.name]) for f in experiment.factors
               if f.name in levels and levels[f.name] != f.control]
    if not changed:
        return None, None
    return ",".join(k for k, _ in changed), ",".join(v for _, v in changed)


def _result(experiment: Experiment, decision: str, rule: str, label: str, reasons: list[str],
            inputs: dict, cell: str | None = None, days_needed: int | None = None) -> dict:
    flag_key, variant = _changed(experiment, cell) if cell else (None, None)
    return {"experiment_id": experiment.id, "decision": decision, "label": label, "cell": cell,
            "flag_key": flag_key, "variant": variant, "flags": flags_of(experiment, cell) if cell else None,
            "rule": rule, "inputs": inputs, "days_needed": days_needed, "reasons": reasons}


def _invalid(experiment: Experiment, facts: NightFacts) -> dict | None:
    rules = experiment.decision_rules
    reasons, inputs = [], {}
    if facts.srm and facts.srm.get("passed") is False:
        inputs["srm_p_value"] = _num(facts.srm["p_value"])
        inputs["srm_alpha"] = SRM_ALPHA
        reasons.append(f"Sample ratio mismatch: chi-square p = {facts.srm['p_value']:.2g} < {SRM_ALPHA}; "
                       "assignment is broken, no effect can be trusted.")
    if facts.failed_blocking_checks:
        inputs["failed_blocking_checks"] = list(facts.failed_blocking_checks)
        reasons.append("Blocking data checks failed: " + ", ".join(facts.failed_blocking_checks) + ".")
    lag_hours = None if facts.lag_p95_seconds is None else facts.lag_p95_seconds / 3600
    if lag_hours is not None and math.isfinite(lag_hours) and lag_hours > rules.max_telemetry_lag_hours:
        inputs["lag_p95_hours"] = _num(lag_hours)
        inputs["max_telemetry_lag_hours"] = rules.max_telemetry_lag_hours
        reasons.append(f"Telemetry is late: p95 lag {lag_hours:.1f} h > {rules.max_telemetry_lag_hours:g} h; "
                       "tonight's numbers are incomplete.")
    if not reasons:
        return None
    rule = "srm" if "srm_p_value" in inputs else "data_quality" if "failed_blocking_checks" in inputs else "telemetry_lag"
    return _result(experiment, "invalid", rule, "invalid: " + reasons[0].split(":")[0].lower(), reasons, inputs)


def _pause(experiment: Experiment, registry: Registry, burn: pd.DataFrame) -> dict | None:
    pausing = burn[burn["status"] == "pause"] if not burn.empty else burn
    if pausing.empty:
        return None
    worst = pausing.sort_values("budget_consumed", ascending=False).iloc[0]
    flag_key, variant = _changed(experiment, worst["cell_id"])
    share = experiment.decision_rules.burn_pause_share
    reasons = [
        f"{r.cell_id} burned {r.budget_consumed:.0%} of its {r.metric} error budget in the last "
        f"{r.window_hours} h (burn rate {r.burn_rate:.1f}x, control {r.control_burn_rate:.1f}x; "
        f"pause above {share:.0%})." for r in pausing.sort_values("budget_consumed", ascending=False).itertuples()]
    reasons.append(f"Reduce exposure or turn off {flag_key}={variant} now; the statistics need not be conclusive.")
    inputs = {"metric": worst["metric"], "window_hours": int(worst["window_hours"]),
              "budget_consumed": _num(worst["budget_consumed"]), "burn_rate": _num(worst["burn_rate"]),
              "control_burn_rate": _num(worst["control_burn_rate"]), "bad_events": int(worst["bad_events"]),
              "events": int(worst["events"]), "objective": _num(worst["objective"]), "threshold": share}
    return _result(experiment, "pause", "budget_burn", f"pause: {worst['cell_id']} is burning its error budget",
                   reasons, inputs, cell=worst["cell_id"])


def _harm_text(registry: Registry, row) -> str:
    unit = registry.metric(row.metric).unit
    margin = "no margin" if pd.isna(row.margin) else f"margin {fmt_diff(row.margin, unit, signed=False)}"
    return (f"{row.metric} is {fmt_diff(abs(row.estimate), unit, signed=False)} worse in {row.cell} than in control "
            f"({fmt_level(row.treatment_value, unit)} vs {fmt_level(row.control_value, unit)}; harm up to "
            f"{fmt_diff(row.harm_bound, unit, signed=False)}, {margin}; Holm p = {row.p_harm_adjusted:.2g}).")


def _stop_harm(experiment: Experiment, registry: Registry, guardrails: pd.DataFrame) -> dict | None:
    harm = guardrails[guardrails["status"] == "harm"] if not guardrails.empty else guardrails
    if harm.empty:
        return None
    # most harmful first: the point estimate's excess over the margin
    harm = harm.assign(_excess=harm["estimate"].abs() - harm["margin"].fillna(0.0)).sort_values(
        "_excess", ascending=False)
    cells = harm[harm["scope"] == "cell"]
    levels = harm[harm["scope"] == "level"]
    harmful_cells = list(dict.fromkeys(cells["cell"]))
    target = None
    if len(harmful_cells) != 1:  # several cells: a level explains the harm if every one of them has it
        target = next((lv for lv in levels.itertuples()
                       if harmful_cells and all(cell_levels(c).get(lv.factor) == lv.level for c in harmful_cells)), None)
    if target is None:  # one combination (or no shared level): name the most harmful cell, all its levels
        target = next((cells if not cells.empty else levels).itertuples())
    name = target.cell
    flag_key, variant = _changed(experiment, name)
    reasons = [_harm_text(registry, r) for r in harm.itertuples()]
    where = "the level" if target.scope == "level" else "the combination"
    reasons.append(f"Turn off {flag_key}={variant} ({where} {name}); runbook: roll the flag back to its control "
                   "variant, then check the guardrail dashboard.")
    inputs = {"metric": target.metric, "scope": target.scope, "estimate": _num(target.estimate),
              "control_value": _num(target.control_value), "treatment_value": _num(target.treatment_value),
              "harm_bound": _num(target.harm_bound), "margin": _num(target.margin),
              "p_harm_adjusted": _num(target.p_harm_adjusted), "alpha": experiment.alpha,
              "harmful_rows": int(len(harm))}
    return _result(experiment, "stop_harm", "guardrail_harm", f"stop_harm: turn off {flag_key}={variant}",
                   reasons, inputs, cell=name)


def primary_contrasts(experiment: Experiment, registry: Registry, cell_stats: pd.DataFrame,
                      cell_quantiles: pd.DataFrame | None) -> pd.DataFrame:
    """Treated cells vs control on the first primary metric: `gain` (positive = better), its
    one-sided p-value on the decision basis and Holm across the treated cells, and the interval."""
    primary = experiment.metrics.primary[0]
    c = experiment_contrasts(experiment, registry, cell_stats, cell_quantiles, roles=("primary",))
    c = c[c["metric"] == primary]
    if "status" in c:  # a quantile resting on too few events (rank clamped) never decides
        c = c[c["status"].fillna("ok") == "ok"]
    c = c.reset_index(drop=True)
    if c.empty:
        return c
    sign = 1.0 if registry.metric(primary).direction == "higher" else -1.0
    kw = dict(alpha=experiment.alpha, n_star=c["n_star"].to_numpy(), method=method_of(experiment))
    c["gain"] = sign * c["estimate"]
    c["p_gain"] = np.atleast_1d(one_sided_p_value(c["gain"].to_numpy(), c["std_error"].to_numpy(),
                                                  c["n_total"].to_numpy(), **kw))
    c["p_gain_adjusted"] = np.asarray(holm(c["p_gain"].to_numpy()))
    lo, hi = sequential_ci(c["gain"].to_numpy(), c["std_error"].to_numpy(), c["n_total"].to_numpy(), **kw)
    c["gain_low"], c["gain_high"] = np.atleast_1d(lo), np.atleast_1d(hi)
    return c


def _ship(experiment: Experiment, registry: Registry, guardrails: pd.DataFrame, primary: pd.DataFrame) -> dict | None:
    if primary.empty:
        return None
    cell_rows = guardrails[guardrails["scope"] == "cell"] if not guardrails.empty else guardrails
    n_guardrails = len(experiment.metrics.guardrails)
    ok_cells = {c for c, g in cell_rows.groupby("cell") if (g["status"] == "ok").all() and len(g) == n_guardrails} \
        if n_guardrails else set(primary["cell_id"])
    winners = primary[(primary["p_gain_adjusted"] < experiment.alpha) & (primary["gain"] > 0)]
    eligible = winners[winners["cell_id"].isin(ok_cells)]
    if eligible.empty:
        return None
    best = eligible.sort_values("gain", ascending=False).iloc[0]
    metric, unit = best["metric"], registry.metric(best["metric"]).unit
    reasons = [f"{best['cell_id']} beats control on {metric} by {fmt_diff(best['estimate'], unit)} "
               f"({fmt_level(best['treatment_value'], unit)} vs {fmt_level(best['control_value'], unit)}; gain "
               f"interval [{fmt_diff(best['gain_low'], unit)}, {fmt_diff(best['gain_high'], unit)}]; "
               f"Holm p = {best['p_gain_adjusted']:.2g})."]
    if n_guardrails:
        reasons.append(f"Every guardrail of {best['cell_id']} is non-inferior ({', '.join(experiment.metrics.guardrails)}).")
    skipped = winners[~winners["cell_id"].isin(ok_cells) & (winners["gain"] > best["gain"])]
    for r in skipped.itertuples():
        reasons.append(f"{r.cell_id} gains more ({fmt_diff(r.estimate, unit)}) but not all its guardrails are "
                       "non-inferior.")
    inputs = {"metric": metric, "estimate": _num(best["estimate"]), "control_value": _num(best["control_value"]),
              "treatment_value": _num(best["treatment_value"]), "gain_low": _num(best["gain_low"]),
              "gain_high": _num(best["gain_high"]), "p_gain_adjusted": _num(best["p_gain_adjusted"]),
              "alpha": experiment.alpha, "candidates": int(len(eligible))}
    flag_text = ", ".join(f"{k}={v}" for k, v in flags_of(experiment, best["cell_id"]).items())
    return _result(experiment, "ship", "best_combination", f"ship: {flag_text}", reasons, inputs,
                   cell=best["cell_id"])


def _futility(experiment: Experiment, registry: Registry, primary: pd.DataFrame) -> dict | None:
    if not experiment.decision_rules.futility or experiment.mde is None or primary.empty:
        return None
    if not (primary["gain_high"] < experiment.mde).all():
        return None
    unit = registry.metric(primary["metric"].iloc[0]).unit
    best = primary.sort_values("gain_high", ascending=False).iloc[0]
    reasons = [f"No combination can reach the MDE of {fmt_diff(experiment.mde, unit, signed=False)} on "
               f"{best['metric']}: the highest interval bound is {fmt_diff(best['gain_high'], unit)} ({best['cell_id']}).",
               "Stop and free the traffic; the ideas did not move the metric by the size that was worth shipping."]
    inputs = {"metric": best["metric"], "mde": experiment.mde, "max_gain_high": _num(best["gain_high"]),
              "cells": int(len(primary))}
    return _result(experiment, "stop_futility", "futility", "stop_futility: the MDE is ruled out", reasons, inputs)


def days_needed(experiment: Experiment, primary: pd.DataFrame, as_of: dt.date) -> int | None:
    """Days until the largest cell-vs-control standard error is small enough to detect the MDE
    with the experiment's power: SE falls as 1/sqrt(n), so n_needed = n (k SE / MDE)^2 with k the
    power multiplier of `stats/power.py`, at the traffic so far (units per day since the start)."""
    if experiment.mde is None or primary.empty:
        return None
    n_now = float(primary["n_total"].max())
    days = max((as_of - experiment.start_date).days + 1, 1)
    k = power_multiplier(experiment.alpha, experiment.power, experiment.decision_basis == "sequential")
    n_needed = n_now * (k * float(primary["std_error"].max()) / experiment.mde) ** 2
    return max(int(math.ceil((n_needed - n_now) / (n_now / days))), 0) if n_now > 0 else None


def degradations(experiment: Experiment, registry: Registry, cell_stats: pd.DataFrame,
                 cell_quantiles: pd.DataFrame | None) -> list[dict]:
    """Primary/secondary metrics significantly worse than control in some cell (Holm over the
    experiment's cells x business metrics): a ticket for the owner, not a page."""
    c = experiment_contrasts(experiment, registry, cell_stats, cell_quantiles, roles=("primary", "secondary"))
    if "status" in c:
        c = c[c["status"].fillna("ok") == "ok"].reset_index(drop=True)
    if c.empty:
        return []
    sign = np.where(c["metric"].map(lambda m: registry.metric(m).direction) == "higher", 1.0, -1.0)
    p = np.atleast_1d(one_sided_p_value(-sign * c["estimate"].to_numpy(), c["std_error"].to_numpy(),
                                        c["n_total"].to_numpy(), alpha=experiment.alpha,
                                        n_star=c["n_star"].to_numpy(), method=method_of(experiment)))
    c["p_adjusted"] = np.asarray(holm(p))
    bad = c[c["p_adjusted"] < experiment.alpha]
    return [{"cell": r.cell_id, "metric": r.metric, "estimate": _num(r.estimate), "control_value": _num(r.control_value),
             "treatment_value": _num(r.treatment_value), "p_adjusted": _num(r.p_adjusted)} for r in bad.itertuples()]


def decide(experiment: Experiment, registry: Registry, *, guardrails: pd.DataFrame, burn: pd.DataFrame,
           cell_stats: pd.DataFrame, cell_quantiles: pd.DataFrame | None, facts: NightFacts,
           as_of: dt.date) -> dict:
    """The night's decision of one experiment (a row of `analysis.decisions` without report_path)."""
    primary = primary_contrasts(experiment, registry, cell_stats, cell_quantiles)
    rules = experiment.decision_rules
    decision = (_invalid(experiment, facts) or _pause(experiment, registry, burn)
                or _stop_harm(experiment, registry, guardrails))
    if decision is None and facts.min_cell_units is not None and facts.min_cell_units < experiment.min_units_per_cell:
        need = days_needed(experiment, primary, as_of)
        decision = _result(experiment, "keep_running", "min_units", "keep_running: not enough data yet",
                           [f"The smallest cell has {facts.min_cell_units} analysable units "
                            f"(< {experiment.min_units_per_cell})."],
                           {"min_cell_units": facts.min_cell_units, "min_units_per_cell": experiment.min_units_per_cell},
                           days_needed=need)
    decision = decision or _ship(experiment, registry, guardrails, primary) or _futility(experiment, registry, primary)
    if decision is None:
        past_end = experiment.end_date is not None and as_of > experiment.end_date
        need = None if past_end else days_needed(experiment, primary, as_of)
        inconclusive = guardrails[guardrails["status"] == "inconclusive"] if not guardrails.empty else guardrails
        reasons = ["No combination beats control on the primary metric with every guardrail non-inferior yet."]
        if len(inconclusive):
            reasons.append(f"{len(inconclusive)} guardrail rows are still inconclusive (margin not yet shown).")
        if need is not None:
            reasons.append(f"About {need} more days at the current traffic to detect the MDE of "
                           f"{fmt_diff(experiment.mde, registry.metric(experiment.metrics.primary[0]).unit, signed=False)} "
                           f"with {experiment.power:.0%} power.")
        inputs = {"best_gain": _num(primary["gain"].max()) if not primary.empty else None,
                  "best_p_gain_adjusted": _num(primary["p_gain_adjusted"].min()) if not primary.empty else None,
                  "inconclusive_guardrails": int(len(inconclusive)), "mde": experiment.mde}
        decision = (_result(experiment, "conclude_no_effect", "past_end_date", "conclude_no_effect", reasons, inputs)
                    if past_end else
                    _result(experiment, "keep_running", "not_yet_conclusive", "keep_running", reasons, inputs,
                            days_needed=need))
    decision["inputs"] = {**decision["inputs"], "rules": rules.model_dump()}
    decision["degradations"] = degradations(experiment, registry, cell_stats, cell_quantiles)
    decision.update(primary_summary(experiment, registry, primary, decision.get("cell") if decision["decision"] == "ship" else None))
    statuses = [] if guardrails.empty else list(guardrails["status"])
    decision["guardrail_status"] = max(statuses, key=GUARDRAIL_RANK.get) if statuses else None
    decision["days_running"] = max((as_of - experiment.start_date).days + 1, 0)
    return decision


def primary_summary(experiment: Experiment, registry: Registry, primary: pd.DataFrame, cell: str | None) -> dict:
    """The primary lift every surface shows (index, page, metadata): the shipped combination, else
    the leading one, vs control, with its interval on the decision basis (always-valid by default),
    in the metric's scale (treatment − control)."""
    out = {"primary_metric": experiment.metrics.primary[0], "primary_interval": experiment.decision_basis}
    if primary.empty:
        return out
    rows = primary[primary["cell_id"] == cell] if cell else primary.iloc[0:0]
    best = (rows if len(rows) else primary.sort_values("gain", ascending=False)).iloc[0]
    sign = 1.0 if registry.metric(best["metric"]).direction == "higher" else -1.0  # gain = sign x estimate
    low, high = sorted((sign * float(best["gain_low"]), sign * float(best["gain_high"])))
    return {**out, "primary_cell": best["cell_id"], "primary_control_value": _num(best["control_value"]),
            "primary_estimate": _num(best["estimate"]), "primary_ci_low": _num(low), "primary_ci_high": _num(high)}


def decision_row(decision: dict, report_path: str | None) -> dict:
    """The decision as an `analysis.decisions` row (JSON text for the structured fields)."""
    row = {k: decision.get(k) for k in DECISION_COLUMNS}
    for key in ("flags", "inputs", "reasons", "degradations"):
        row[key] = None if decision.get(key) is None else json.dumps(decision[key], default=_num)
    row["report_path"] = report_path
    return row
