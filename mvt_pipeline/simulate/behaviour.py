"""The behavioural model of every telemetry source: its kind, baseline, and which experiment drives it.

Source kinds (derived from how the metric catalogue uses the source):
- conversion:    at most one event (value 1) per unit in the window, P = propensity * (baseline + effect)
- amount:        one event per trigger conversion (revenue with checkout), per-unit expected sum
                 = propensity * (baseline + effect); the amount of a buyer is gamma(shape 3)
- counter:       Poisson(propensity * (baseline + effect)) events of value 1
- request_flag:  per request 0/1 with P = baseline + effect (e.g. `error`)
- request_value: per request lognormal(mu=baseline, sigma) * (1 + effect) (e.g. `latency_ms`)
Every unit sends 1 + Poisson(requests_per_unit) requests in its visit; each request emits one event
per request source.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..registry import Experiment, Metric, Registry
from .assignment import design_cells
from .population import segment_matches, segment_values
from .truth import GENERIC_BASELINES, GENERIC_SIGMA, MetricTruth, SimulationConfig

KIND_PRIORITY = ["request_value", "request_flag", "conversion", "amount", "counter"]
REQUEST_KINDS = ("request_flag", "request_value")
OWN_TRIGGER_P = 0.3  # amount sources without a trigger conversion: P(buy) = 0.3 * propensity


@dataclass
class SourceModel:
    name: str
    kind: str
    baseline: float
    sigma: float | None = None
    owner: str | None = None  # experiment id driving this source (None: no effects)
    truth: MetricTruth | None = None  # the owner's truth for the metric that drives the source
    trigger: str | None = None  # amount sources: the conversion source that triggers them
    measured_by: list[str] = field(default_factory=list)  # experiment ids measuring the source


def metric_sources(metric: Metric) -> list[str]:
    if metric.kind == "ratio":
        return [metric.numerator.source, metric.denominator.source]
    return [metric.source]


def driven_source(metric: Metric) -> str:
    """The source an effect on this metric acts on (a ratio's numerator)."""
    return metric.numerator.source if metric.kind == "ratio" else metric.source


def _kinds(registry: Registry) -> dict[str, str]:
    wanted: dict[str, set[str]] = {}
    for m in registry.metrics:
        if m.kind == "binary":
            wanted.setdefault(m.source, set()).add("conversion")
        elif m.kind == "continuous":
            wanted.setdefault(m.source, set()).add("amount")
        elif m.kind == "count":
            wanted.setdefault(m.source, set()).add("counter")
        elif m.kind == "quantile":
            wanted.setdefault(m.source, set()).add("request_value")
        elif m.kind == "ratio":
            if m.numerator.source == m.denominator.source:
                wanted.setdefault(m.numerator.source, set()).add("request_flag")
            else:
                for s in (m.numerator.source, m.denominator.source):
                    wanted.setdefault(s, set()).add("counter")
    return {s: next(k for k in KIND_PRIORITY if k in ks) for s, ks in wanted.items()}


def build_sources(registry: Registry, experiments: list[Experiment], truth, config: SimulationConfig) -> dict[str, SourceModel]:
    kinds = _kinds(registry)
    models = {s: SourceModel(name=s, kind=k, baseline=GENERIC_BASELINES[k]) for s, k in sorted(kinds.items())}
    baselines: dict[str, tuple[float, float | None, str]] = {}
    for exp in experiments:
        et = truth.get(exp.id)
        for mname, _role in exp.metrics.by_role():
            metric = registry.metric(mname)
            for s in metric_sources(metric):
                if exp.id not in models[s].measured_by:
                    models[s].measured_by.append(exp.id)
            if et is None or mname not in et.metrics:
                continue
            mt = et.metrics[mname]
            s = driven_source(metric)
            if mt.baseline is not None:
                prev = baselines.get(s)
                if prev and (abs(prev[0] - mt.baseline) > 1e-12 or (prev[1] or 0) != (mt.sigma or 0)):
                    raise ValueError(
                        f"source {s!r}: baseline {mt.baseline} ({exp.id}.{mname}) conflicts with {prev[0]} ({prev[2]})"
                    )
                baselines[s] = (mt.baseline, mt.sigma, f"{exp.id}.{mname}")
            if mt.has_effects():
                model = models[s]
                if model.owner is not None:
                    raise ValueError(
                        f"source {s!r} has effects from {model.owner} and {exp.id}.{mname}; "
                        "the simulator lets one experiment drive each source"
                    )
                _check_truth(exp, mname, mt)
                model.owner, model.truth = exp.id, mt
    for s, (base, sigma, _) in baselines.items():
        models[s].baseline = base
        if models[s].kind == "request_value":
            models[s].sigma = sigma if sigma is not None else GENERIC_SIGMA
    for m in models.values():
        if m.kind == "request_value" and m.sigma is None:
            m.sigma = GENERIC_SIGMA
        if m.kind == "amount":
            trig = config.amount_triggers.get(m.name)
            m.trigger = trig if trig in models and models[trig].kind == "conversion" else None
    return models


def _check_truth(exp: Experiment, mname: str, mt: MetricTruth) -> None:
    names = {f.name: f for f in exp.factors}
    for fac, lv in mt.main_effects.items():
        if fac not in names or not set(lv) <= set(names[fac].levels):
            raise ValueError(f"{exp.id}.{mname}: main effect on unknown factor/level {fac}: {list(lv)}")
    for term, lv in mt.interactions.items():
        facs = term.split(":")
        if any(f not in names for f in facs) or len(set(facs)) != len(facs):
            raise ValueError(f"{exp.id}.{mname}: interaction {term!r} names unknown factors")
        for key in lv:
            levels = key.split(":")
            if len(levels) != len(facs) or any(l not in names[f].levels for f, l in zip(facs, levels)):
                raise ValueError(f"{exp.id}.{mname}: interaction {term!r} level {key!r} is invalid")
    for se in mt.segment_effects:
        if se.factor not in names or se.level not in names[se.factor].levels:
            raise ValueError(f"{exp.id}.{mname}: segment effect on unknown factor/level {se.factor}={se.level}")


def cell_effects(exp: Experiment, mt: MetricTruth | None) -> np.ndarray:
    """Main effects + interactions for every design cell (no segment effects)."""
    cells = design_cells(exp)
    out = np.zeros(len(cells))
    if mt is None:
        return out
    pos = {f.name: i for i, f in enumerate(exp.factors)}
    for ci, cell in enumerate(cells):
        total = 0.0
        for fac, lv in mt.main_effects.items():
            total += lv.get(cell[pos[fac]], 0.0)
        for term, lv in mt.interactions.items():
            key = ":".join(cell[pos[f]] for f in term.split(":"))
            total += lv.get(key, 0.0)
        out[ci] = total
    return out


def unit_effects(model: SourceModel, experiments: dict[str, Experiment], cell_idx: dict[str, np.ndarray], units) -> np.ndarray:
    """Per-unit effect on a source from its owner experiment (0 for units not exposed to the owner)."""
    n = len(units["propensity"])
    if model.owner is None or model.owner not in cell_idx:
        return np.zeros(n)
    exp = experiments[model.owner]
    idx = cell_idx[model.owner]
    exposed = idx >= 0
    table = cell_effects(exp, model.truth)
    eff = np.where(exposed, table[np.maximum(idx, 0)], 0.0)
    cells = np.asarray(design_cells(exp), dtype=object)
    pos = {f.name: i for i, f in enumerate(exp.factors)}
    for se in model.truth.segment_effects:
        level_ok = np.zeros(n, dtype=bool)
        level_ok[exposed] = cells[idx[exposed], pos[se.factor]] == se.level
        seg_ok = segment_matches(segment_values(units, se.segment), se.segment, se.value)
        eff = eff + np.where(level_ok & seg_ok, se.delta, 0.0)
    return eff
