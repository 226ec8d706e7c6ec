"""Configuration of the simulator: faults, per-experiment ground truth and defaults.

Effect semantics (per metric of an experiment; an effect acts on the metric's telemetry *source*):

- binary metric (source = a conversion): `baseline` is the conversion probability in the attribution
  window of a control unit; effects add to that probability.
- continuous metric (source = an amount, e.g. `revenue`): `baseline` is the expected SUM per exposed
  unit in the window (zero for non-buyers included); effects add to that per-unit mean. Amount events
  are sent by units that convert on the trigger source (`revenue` is sent with `checkout`).
- count metric: `baseline` is the expected number of events per unit; effects add to it.
- ratio metric whose numerator and denominator use one per-request source (`error_rate`): `baseline`
  is the per-request probability of value 1; effects add to it.
- quantile metric (per-request source, `latency_ms`): values are lognormal(`baseline`=mu, `sigma`);
  effects are RELATIVE (0.08 = every value of the unit is multiplied by 1.08).

Every per-unit probability/mean is multiplied by a latent propensity (mean 1, uniform on [0.4, 1.6])
except per-request values. A source can be driven (given non-zero effects) by ONE experiment only;
other experiments that measure it see that experiment's effects averaged out (their assignments are
independent), which the truth accounts for exactly.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..registry import Registry

SegmentName = Literal["device", "platform", "country", "is_new_user"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SegmentEffect(_Model):
    """Units in a cell with `factor`=`level` AND `segment`=`value` get `delta` on top."""

    factor: str
    level: str
    segment: SegmentName
    value: str | bool
    delta: float


class MetricTruth(_Model):
    baseline: float | None = None
    sigma: float | None = None  # quantile (lognormal) metrics only
    main_effects: dict[str, dict[str, float]] = Field(default_factory=dict)
    interactions: dict[str, dict[str, float]] = Field(default_factory=dict)
    segment_effects: list[SegmentEffect] = Field(default_factory=list)

    def has_effects(self) -> bool:
        return (
            any(v != 0 for lv in self.main_effects.values() for v in lv.values())
            or any(v != 0 for lv in self.interactions.values() for v in lv.values())
            or any(s.delta != 0 for s in self.segment_effects)
        )


class ExperimentTruth(_Model):
    exposure_rate: float = Field(default=0.6, gt=0, le=1)
    metrics: dict[str, MetricTruth] = Field(default_factory=dict)


class Faults(_Model):
    duplicate_rate: float = Field(default=0.0, ge=0, lt=1)
    loss_rate: float = Field(default=0.0, ge=0, lt=1)
    late_rate: float = Field(default=0.0, ge=0, lt=1)
    bot_share: float = Field(default=0.0, ge=0, lt=1)
    flip_rate: float = Field(default=0.0, ge=0, lt=1)
    srm: dict[str, dict[str, list[float]]] = Field(default_factory=dict)
    malformed_rate: float = Field(default=0.0, ge=0, lt=1)
    pii_rate: float = Field(default=0.0, ge=0, lt=1)

    @classmethod
    def demo(cls) -> "Faults":
        """The fault mix used by the CLI unless --no-faults: every check has something to find."""
        return cls(
            duplicate_rate=0.02,
            loss_rate=0.01,
            late_rate=0.01,
            bot_share=0.01,
            flip_rate=0.005,
            malformed_rate=0.001,
            pii_rate=0.001,
        )


class SimulationConfig(_Model):
    users: int = Field(default=20_000, ge=1)
    days: int = Field(default=7, ge=1)
    seed: int = 0
    start_date: dt.date = dt.date(2026, 11, 1)
    sources: list[str] = Field(default_factory=lambda: ["web_sdk", "ios_sdk", "android_sdk"], min_length=1)
    faults: Faults = Field(default_factory=Faults)
    truth: dict[str, ExperimentTruth] | None = None  # None: default_truth(registry)
    exposure_mode: dict[str, Literal["cell", "per_factor"]] = Field(default_factory=dict)
    compress: bool = True
    amount_triggers: dict[str, str] = Field(default_factory=lambda: {"revenue": "checkout"})
    requests_per_unit: float = Field(default=4.0, ge=0)  # per exposure visit: 1 + Poisson(this)
    max_lines_per_file: int = Field(default=500_000, ge=1)

    @field_validator("sources")
    @classmethod
    def _sources(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("sources must be unique")
        return v

    def mode(self, experiment_id: str) -> str:
        return self.exposure_mode.get(experiment_id, "cell")


# Generic behavioural baselines by source kind (used when no experiment sets one).
GENERIC_BASELINES = {
    "conversion": 0.10,
    "amount": 4.0,
    "counter": 1.5,
    "request_flag": 0.02,
    "request_value": math.log(180.0),
}
GENERIC_SIGMA = 0.45


def _defaults_for(registry: Registry, metric_names: list[str]) -> dict[str, MetricTruth]:
    out: dict[str, MetricTruth] = {}
    for name in metric_names:
        m = registry.metric(name)
        if m.kind == "binary":
            base = {"checkout": 0.10, "search_click": 0.30, "signup": 0.05}.get(m.source or "", 0.10)
            out[name] = MetricTruth(baseline=base)
        elif m.kind == "continuous":
            out[name] = MetricTruth(baseline=4.0)
        elif m.kind == "count":
            out[name] = MetricTruth(baseline=1.5)
        elif m.kind == "ratio":
            out[name] = MetricTruth(baseline=0.02)
        elif m.kind == "quantile":
            out[name] = MetricTruth(baseline=math.log(180.0), sigma=GENERIC_SIGMA)
    return out


def default_truth(registry: Registry) -> dict[str, ExperimentTruth]:
    """Known effects for the sample experiments; zero effects + generic baselines for any other."""
    truth: dict[str, ExperimentTruth] = {}
    for exp in registry.experiments:
        names = [m for m, _ in exp.metrics.by_role()]
        metrics = _defaults_for(registry, names)
        levels = {f.name: set(f.levels) for f in exp.factors}

        def put(metric: str, factor: str, level: str, delta: float) -> None:
            if metric in metrics and level in levels.get(factor, ()):
                metrics[metric].main_effects.setdefault(factor, {})[level] = delta

        def seg(metric: str, factor: str, level: str, segment: str, value, delta: float) -> None:
            if metric in metrics and level in levels.get(factor, ()) and segment in exp.segments:
                metrics[metric].segment_effects.append(
                    SegmentEffect(factor=factor, level=level, segment=segment, value=value, delta=delta)
                )

        if exp.id == "checkout_mvt":
            put("checkout_conversion", "cta_color", "green", 0.015)
            put("checkout_conversion", "validation", "inline", 0.010)
            put("checkout_conversion", "copy", "benefits", 0.005)
            put("revenue_per_user", "cta_color", "green", 0.60)
            put("revenue_per_user", "validation", "inline", 0.40)
            put("revenue_per_user", "copy", "benefits", 0.20)
            put("latency_p95", "validation", "inline", 0.08)
            seg("checkout_conversion", "cta_color", "green", "device", "mobile", 0.010)
        elif exp.id == "search_ranking_frac":
            put("search_click_through", "recency_boost", "on", 0.020)
            put("search_click_through", "personalization", "on", 0.030)
            put("search_click_through", "snippet_length", "long", -0.010)
            seg("search_click_through", "personalization", "on", "platform", "ios", 0.010)
        elif exp.id == "pricing_abn":
            put("signup_conversion", "pricing_banner", "discount", 0.010)
            put("signup_conversion", "pricing_banner", "social_proof", 0.004)
            seg("signup_conversion", "pricing_banner", "discount", "country", "IN", 0.010)
        truth[exp.id] = ExperimentTruth(metrics=metrics)
    return truth
