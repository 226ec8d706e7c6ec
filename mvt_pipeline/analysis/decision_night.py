"""One night of guardrails, budget burn and decisions for every experiment, and what the Dagster
checks and the alerts read from it.

Why a separate module: the asset stays thin, and the check results carry `alert_signals` built
here from the same rows that land in `analysis.guardrails` / `analysis.decisions`, so an alert, a
report and the asset metadata always show the same numbers.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..registry import Experiment, Registry
from ..reports.decision_view import primary_lift_text, primary_share
from ..reports.night_files import page_path
from .budget_burn import budget_burn
from .decisions import DECISION_COLUMNS, NightFacts, decide, decision_row
from .guardrails import GUARDRAIL_COLUMNS, all_guardrails

PAGE_SYMPTOMS = ("guardrail_harm", "budget_burn")  # page the owner; the rest become tickets
RUNBOOK = ("Roll the flag variant back to control (or cut its exposure), confirm the guardrail recovers "
           "on the next night, then read the report's guardrails view.")


@dataclass
class DecisionInputs:
    effects: pd.DataFrame
    srm: pd.DataFrame
    cell_stats: pd.DataFrame  # overall agg_cell_stats rows
    cell_quantiles: pd.DataFrame | None
    slo_hourly: pd.DataFrame
    lag_p95_seconds: float | None = None
    failed_blocking_checks: list[str] = field(default_factory=list)


@dataclass
class CheckOutcome:
    name: str
    passed: bool
    severity: str  # ERROR / WARN
    description: str | None
    signals: list[dict]
    tables: dict[str, str]


@dataclass
class Night:
    registry: Registry
    guardrails: pd.DataFrame
    burn: pd.DataFrame
    decisions: pd.DataFrame
    decided: dict[str, dict]  # experiment_id -> decision dict (structured)

    def decision_markdown(self, registry: Registry) -> str:
        """The asset metadata's table; the lift is printed by the same function as the index and page."""
        if self.decisions.empty:
            return "(none)"
        rows = self.decisions.to_dict("records")
        metrics = {m.name: m for m in registry.metrics}
        lifts = [primary_lift_text(r, m, primary_share(r, m)) for r in rows
                 for m in [metrics.get(r.get("primary_metric"))]]
        table = self.decisions.assign(primary_lift=lifts)
        return table[["experiment_id", "decision", "cell", "rule", "primary_metric", "primary_lift", "guardrail_status",
                      "days_running", "days_needed"]].to_markdown(index=False)

    def guardrail_markdown(self) -> dict[str, str]:
        cols = ["scope", "cell", "metric", "estimate", "margin", "harm_bound", "p_harm_adjusted", "status"]
        return {exp: g[cols].to_markdown(index=False, floatfmt=".4g")
                for exp, g in self.guardrails.groupby("experiment_id")} if not self.guardrails.empty else {}

    def checks(self) -> list[CheckOutcome]:
        return [self._guardrail_check(), self._business_check()]

    def _signal(self, exp: Experiment, symptom: str, firing: bool, severity: str, **details) -> dict:
        decision = self.decided.get(exp.id, {})
        return {"experiment_id": exp.id, "symptom": symptom, "firing": bool(firing), "severity": severity,
                "route": "page" if symptom in PAGE_SYMPTOMS else "ticket", "owner": exp.owner,
                "decision": decision.get("decision"), "report": decision.get("report_path"),
                "runbook": RUNBOOK if symptom in PAGE_SYMPTOMS else None, **details}

    def _guardrail_check(self) -> CheckOutcome:
        signals, harmful, inconclusive = [], [], []
        for exp in self.registry.experiments:
            if exp.id not in self.decided:
                continue
            d = self.decided[exp.id]
            g = self.guardrails[self.guardrails["experiment_id"] == exp.id] if not self.guardrails.empty else self.guardrails
            b = self.burn[self.burn["experiment_id"] == exp.id] if not self.burn.empty else self.burn
            harm = g[g["status"] == "harm"] if not g.empty else g
            pause = b[b["status"] == "pause"] if not b.empty else b
            harm_details, burn_details = {}, {}
            if d["decision"] == "stop_harm" or not harm.empty:
                inputs = d["inputs"] if d["decision"] == "stop_harm" else {}
                worst = harm.iloc[0]
                harm_details = {"cell": d.get("cell") or worst["cell"], "metric": inputs.get("metric", worst["metric"]),
                                "observed": inputs.get("treatment_value", worst["treatment_value"]),
                                "control": inputs.get("control_value", worst["control_value"]),
                                "threshold": _threshold(inputs.get("control_value", worst["control_value"]),
                                                        inputs.get("margin", worst["margin"]), worst["direction"]),
                                "unit": worst["unit"], "flag": _flag_text(d),
                                "summary": (d["reasons"] or [""])[0]}
                harmful.append(exp.id)
            if not pause.empty:
                top = pause.sort_values("budget_consumed", ascending=False).iloc[0]
                burn_details = {"cell": top["cell_id"], "metric": top["metric"],
                                "observed": float(top["budget_consumed"]),
                                "threshold": exp.decision_rules.burn_pause_share, "unit": "of error budget",
                                "window_hours": int(top["window_hours"]),
                                "flag": _flag_text(d) if d["decision"] == "pause" else None,
                                "summary": next((r for r in d["reasons"] if "burned" in r), "")
                                if d["decision"] == "pause" else ""}
                harmful.append(exp.id)
            if not g.empty and (g["status"] == "inconclusive").any():
                inconclusive.append(exp.id)
            signals.append(self._signal(exp, "guardrail_harm", bool(harm_details), "ERROR", **harm_details))
            signals.append(self._signal(exp, "budget_burn", bool(burn_details), "ERROR", **burn_details))
        tables = {f"guardrails/{k}": v for k, v in self.guardrail_markdown().items()}
        if harmful:
            return CheckOutcome("guardrails", False, "ERROR", "guardrail harm or error-budget burn: "
                                + ", ".join(sorted(set(harmful))), signals, tables)
        if inconclusive:
            return CheckOutcome("guardrails", False, "WARN", "guardrails not yet shown non-inferior: "
                                + ", ".join(inconclusive), signals, tables)
        return CheckOutcome("guardrails", True, "WARN", None, signals, tables)

    def _business_check(self) -> CheckOutcome:
        signals, degraded = [], []
        for exp in self.registry.experiments:
            if exp.id not in self.decided:
                continue
            worse = self.decided[exp.id].get("degradations") or []
            details = {}
            if worse:
                first = worse[0]
                details = {"cell": first["cell"], "metric": first["metric"], "observed": first["treatment_value"],
                           "control": first["control_value"], "threshold": first["control_value"],
                           "summary": "; ".join(f"{w['metric']} worse in {w['cell']} (Holm p = {w['p_adjusted']:.2g})"
                                                for w in worse)}
                degraded.append(exp.id)
            signals.append(self._signal(exp, "business_metric_degradation", bool(worse), "WARN", **details))
        return CheckOutcome("business_metrics", not degraded, "WARN",
                            ("business metrics degraded: " + ", ".join(degraded)) if degraded else None, signals, {})


def _threshold(control, margin, direction) -> float | None:
    if control is None or margin is None or pd.isna(margin):
        return None
    return float(control) + float(margin) if direction == "lower" else float(control) - float(margin)


def _flag_text(decision: dict) -> str | None:
    if not decision.get("flag_key"):
        return None
    return ", ".join(f"{k}={v}" for k, v in zip(decision["flag_key"].split(","), decision["variant"].split(",")))


def _srm_facts(srm: pd.DataFrame, experiment_id: str) -> dict | None:
    rows = srm[srm["experiment_id"] == experiment_id] if not srm.empty else srm
    if rows.empty or pd.isna(rows.iloc[0]["p_value"]):
        return None
    return {"p_value": float(rows.iloc[0]["p_value"]), "passed": bool(rows.iloc[0]["passed"])}


def decide_night(registry: Registry, inputs: DecisionInputs, as_of: dt.date, reports_dir: Path) -> Night:
    guardrails = all_guardrails(registry, inputs.effects, inputs.cell_stats, inputs.cell_quantiles)
    burn = budget_burn(registry, inputs.slo_hourly)
    decided, rows = {}, []
    for exp in registry.experiments:
        if exp.status == "draft":
            continue
        primary = inputs.cell_stats[(inputs.cell_stats["experiment_id"] == exp.id)
                                    & (inputs.cell_stats["metric"] == exp.metrics.primary[0])]
        facts = NightFacts(srm=_srm_facts(inputs.srm, exp.id), failed_blocking_checks=inputs.failed_blocking_checks,
                           lag_p95_seconds=inputs.lag_p95_seconds,
                           min_cell_units=int(primary["n_units"].min()) if not primary.empty else 0)
        g = guardrails[guardrails["experiment_id"] == exp.id]
        b = burn[burn["experiment_id"] == exp.id] if not burn.empty else burn
        decision = decide(exp, registry, guardrails=g, burn=b, cell_stats=inputs.cell_stats,
                          cell_quantiles=inputs.cell_quantiles, facts=facts, as_of=as_of)
        decision["report_path"] = str(page_path(reports_dir, as_of, f"{exp.id}.html"))
        decided[exp.id] = decision
        rows.append(decision_row(decision, decision["report_path"]))
    decisions = pd.DataFrame(rows, columns=DECISION_COLUMNS)
    return Night(registry, guardrails.reindex(columns=GUARDRAIL_COLUMNS), burn, decisions, decided)


def decision_from_row(row: dict) -> dict:
    """A stored `analysis.decisions` row back as the structured decision (reports read this)."""
    out = dict(row)
    for key in ("flags", "inputs", "reasons", "degradations"):
        value = out.get(key)
        out[key] = json.loads(value) if isinstance(value, str) and value else value
    return out
