"""Pydantic models of the experiment and metric registry (docs/architecture.md §3).

Names that end up in SQL or in statistical model terms are validated against a strict pattern here,
once, so no later layer has to trust user text. Every float must be finite (`allow_inf_nan=False`):
a NaN passes `w <= 0` and every other comparison, so it would reach the engine silently; counts have
an upper bound so they fit the warehouse's BIGINT columns.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections import Counter
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
# Experiment ids as SDKs name experiments (GrowthBook `exp-checkout-layout`, `checkout.v2`): hyphens
# and dots too, lowercase (a report page is `<id>.html`: no case-only twins), no `..`. Always passed
# to SQL as data and checked again where a file name is built (`reports.night_files`).
EXPERIMENT_ID_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
RESERVED_EXPERIMENT_IDS = frozenset({"index"})  # `index.html` is the night's index page
LEVEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
FLAG_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,126}$"
# An SDK's experiment / flag key, or one of its variation keys (GrowthBook sends a variation's index,
# "0", "1", ..., or its `meta` key): the same strict pattern as flag keys, always passed as data.
SDK_KEY_PATTERN = FLAG_KEY_PATTERN
# The user attribute an SDK hashes (GrowthBook `hashAttribute`: id, deviceId, company.id...)
HASH_ATTRIBUTE_PATTERN = r"^[A-Za-z_$][A-Za-z0-9_.$-]{0,62}$"
SEED_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,126}$"
# An attribute of a JSON object by key (`browser`, `plan`) or dotted path (`os.name`, `order.total`):
# a segment (a context attribute) or an SDK event's value property. No quotes or spaces, so a JSON
# path built from it can only name that attribute; always passed to SQL as data.
ATTRIBUTE_PATH_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]{0,62}(\.[A-Za-z_][A-Za-z0-9_-]{0,62}){0,7}$"
RESERVED_SEGMENTS = frozenset({"overall"})  # agg_cell_stats' whole-experiment rows
DEFAULT_SEGMENT_TOP_K = 10  # segment values kept per attribute; the rest are `other`
_NAME_RE = re.compile(NAME_PATTERN)


def is_valid_name(name: str) -> bool:
    return bool(_NAME_RE.match(name))


def json_path(dotted: str, *, flat: bool = False) -> str:
    """The JSONPath of a validated dotted attribute name, each part quoted (the patterns allow no
    quote): nested (`$."os"."name"`) or, with `flat`, one key holding dots (`$."os.name"`)."""
    return f'$."{dotted}"' if flat else "$." + ".".join(f'"{part}"' for part in dotted.split("."))


DEFAULT_ALPHA = 0.05  # an experiment's significance level unless the registry says otherwise
MAX_COUNT = 2**53  # upper bound of unit / event counts: exact as a float, fits BIGINT


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Factor(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    levels: list[str] = Field(min_length=2)
    control: str
    flag_key: str | None = Field(default=None, pattern=FLAG_KEY_PATTERN)
    code: str | None = Field(default=None, pattern=r"^[A-Z]$")
    # The key the SDK exposes this factor under (one flag / experiment per factor): its exposures map
    # to (experiment, this factor) at ingestion, so the client needs no renaming.
    sdk_key: str | None = Field(default=None, pattern=SDK_KEY_PATTERN)
    # SDK variation (key or index as text) -> level; without it the variation key is the level.
    variations: dict[Annotated[str, Field(pattern=SDK_KEY_PATTERN)], str] | None = None
    # each weight finite (model config) and > 0, so an error names the one weight: factors.0.weights.1
    weights: list[Annotated[float, Field(gt=0)]] | None = None

    @field_validator("levels")
    @classmethod
    def _levels_ok(cls, levels: list[str]) -> list[str]:
        for level in levels:
            if not re.match(LEVEL_PATTERN, level):
                raise ValueError(f"level {level!r} must match {LEVEL_PATTERN}")
        if len(set(levels)) != len(levels):
            raise ValueError("levels must be unique")
        return levels

    @model_validator(mode="after")
    def _control_and_weights(self) -> "Factor":
        if self.control not in self.levels:
            raise ValueError(f"control level {self.control!r} is not one of {self.levels}")
        if self.variations is not None:
            unknown = sorted({lv for lv in self.variations.values() if lv not in self.levels})
            if unknown:
                raise ValueError(f"variations map to {unknown}, which are not levels of the factor ({self.levels})")
        if self.weights is not None:
            if len(self.weights) != len(self.levels):
                raise ValueError("weights must be one positive finite number per level")
            if not math.isfinite(sum(self.weights)):
                raise ValueError("weights are too large: their sum is not a finite number")
        return self

    @property
    def level_weights(self) -> dict[str, float]:
        weights = self.weights or [1.0] * len(self.levels)
        total = sum(weights)
        return {lvl: w / total for lvl, w in zip(self.levels, weights)}


class Design(_Strict):
    type: Literal["full", "fractional"] = "full"
    generators: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _generators_only_for_fractional(self) -> "Design":
        if self.type == "full" and self.generators:
            raise ValueError("generators are only allowed with type: fractional")
        if self.type == "fractional" and not self.generators:
            raise ValueError("a fractional design needs at least one generator such as 'D=ABC'")
        for gen in self.generators:
            if not re.match(r"^[A-Z]=[A-Z]{2,}$", gen.replace(" ", "")):
                raise ValueError(f"generator {gen!r} must look like 'D=ABC'")
        return self


class ExperimentMetrics(_Strict):
    primary: list[str] = Field(min_length=1)
    secondary: list[str] = Field(default_factory=list)
    guardrails: list[str] = Field(default_factory=list)

    def by_role(self) -> list[tuple[str, str]]:
        return (
            [(m, "primary") for m in self.primary]
            + [(m, "secondary") for m in self.secondary]
            + [(m, "guardrail") for m in self.guardrails]
        )


class DecisionRules(_Strict):
    """Thresholds of the nightly decision (docs/decisions.md); every default is defined here, once,
    and an experiment may override any of them under `decision_rules:`."""

    # pause: a treated cell consumed more than this share of its error budget in a short window
    burn_pause_share: float = Field(default=0.5, gt=0, le=1)
    burn_short_windows_hours: list[int] = Field(default_factory=lambda: [1, 6], min_length=1)
    burn_long_window_hours: int = Field(default=24, ge=1, le=24 * 31)
    # a window with fewer events than this is not judged (one failed request in three is noise)
    burn_min_events: int = Field(default=50, ge=1, le=MAX_COUNT)
    # invalid: a source of the experiment is this many hours late (p95 of received_at - ts)
    max_telemetry_lag_hours: float = Field(default=24.0, gt=0)
    # stop_futility: the primary interval excludes the MDE (needs `mde`); off -> keep running instead
    futility: bool = True

    @field_validator("burn_short_windows_hours")
    @classmethod
    def _windows_positive(cls, hours: list[int]) -> list[int]:
        if any(h < 1 or h > 24 * 31 for h in hours):
            raise ValueError("burn windows are whole hours between 1 and 744")
        return sorted(set(hours))

    @property
    def burn_windows_hours(self) -> list[int]:
        return sorted({*self.burn_short_windows_hours, self.burn_long_window_hours})


class Experiment(_Strict):
    id: str = Field(pattern=EXPERIMENT_ID_PATTERN)
    owner: str = Field(min_length=1)
    hypothesis: str = Field(min_length=1)
    unit: str = Field(default="user", pattern=NAME_PATTERN)
    status: Literal["draft", "running", "stopped", "concluded"]
    start_date: dt.date
    end_date: dt.date | None = None
    layer: str | None = Field(default=None, pattern=NAME_PATTERN)
    # How the SDK assigns: the attribute it hashes and its seed (GrowthBook: `hashAttribute`, and
    # `seed`, which defaults to the experiment key there). Two experiments with different seeds or
    # hash attributes are assigned independently (the overlap lint honours them).
    hash_attribute: str | None = Field(default=None, pattern=HASH_ATTRIBUTE_PATTERN)
    seed: str | None = Field(default=None, pattern=SEED_PATTERN)
    factors: list[Factor] = Field(min_length=1)
    design: Design = Field(default_factory=Design)
    metrics: ExperimentMetrics
    attribution_window_days: int = Field(default=7, ge=1, le=365)
    pre_period_days: int = Field(default=14, ge=0, le=365)
    alpha: float = Field(default=DEFAULT_ALPHA, gt=0, lt=0.5)
    power: float = Field(default=0.8, gt=0, lt=1)
    mde: float | None = Field(default=None, gt=0)
    # Context attributes to split by (HTE, per-segment SRM); values are the first exposure's, the
    # `segment_top_k` most frequent kept and the rest bucketed as `other` (bounded cardinality).
    segments: list[Annotated[str, Field(pattern=ATTRIBUTE_PATH_PATTERN, max_length=200)]] = Field(
        default_factory=list, max_length=20)
    segment_top_k: int = Field(default=DEFAULT_SEGMENT_TOP_K, ge=1, le=100)
    flip_policy: Literal["exclude", "first_cell"] = "exclude"
    min_units_per_cell: int = Field(default=150, ge=1, le=MAX_COUNT)
    # Planned total units: the tuning point N* of the always-valid confidence sequences. Fixed for
    # the experiment's life; without it N* falls back to tonight's units (valid per look only).
    planned_units: int | None = Field(default=None, ge=2, le=MAX_COUNT)
    # What decisions use: always-valid (sequential) p-values, safe under nightly peeking, or
    # fixed-horizon ones (only valid if you look once, at the planned end).
    decision_basis: Literal["sequential", "fixed"] = "sequential"
    decision_rules: DecisionRules = Field(default_factory=DecisionRules)

    @field_validator("id")
    @classmethod
    def _id_ok(cls, value: str) -> str:
        if ".." in value or value.endswith("."):
            raise ValueError(f"experiment id {value!r} may not hold '..' or end with '.'")
        if value in RESERVED_EXPERIMENT_IDS:
            raise ValueError(f"experiment id {value!r} is reserved (the report index)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "Experiment":
        names = [f.name for f in self.factors]
        if len(set(names)) != len(names):
            raise ValueError(f"factor names must be unique, got {names}")
        if self.end_date and self.end_date < self.start_date:
            raise ValueError("end_date is before start_date")
        keys = [f.sdk_key for f in self.factors if f.sdk_key]
        if len(set(keys)) != len(keys):
            raise ValueError(f"sdk_key must differ between the factors of one experiment, got {keys}")
        if len(set(self.segments)) != len(self.segments):
            raise ValueError(f"segments must be unique, got {self.segments}")
        for seg in self.segments:
            if seg in RESERVED_SEGMENTS:
                raise ValueError(f"segment {seg!r} is reserved (the whole-experiment rows)")
        if self.design.type == "fractional":
            if any(len(f.levels) != 2 for f in self.factors):
                raise ValueError("fractional designs need two-level factors")
            codes = self.factor_codes()
            for gen in self.design.generators:
                for letter in gen.replace(" ", "").replace("=", ""):
                    if letter not in codes.values():
                        raise ValueError(f"generator {gen!r} uses unknown factor code {letter!r}")
        return self

    def factor_codes(self) -> dict[str, str]:
        """Single-letter codes (A, B, ...) used by fractional-design generators."""
        return {f.name: f.code or chr(ord("A") + i) for i, f in enumerate(self.factors)}

    @property
    def hash_salt(self) -> tuple[str, str | None]:
        """What decides the assignment besides the unit: ("seed", seed) when the SDK hashes with its
        own seed, else ("layer", layer or None for the default layer)."""
        return ("seed", self.seed) if self.seed else ("layer", self.layer)

    def factor(self, name: str) -> Factor:
        for f in self.factors:
            if f.name == name:
                return f
        raise KeyError(name)


class Aggregate(_Strict):
    source: str = Field(pattern=NAME_PATTERN)
    aggregation: Literal["sum", "count"] = "sum"


class SLO(_Strict):
    """A service-level objective over a metric's events: `objective` of them must be good, where an
    event is good when its value is below `good_below` (error events 0/1: good_below 1; latency:
    good_below 800 for "99 % of requests under 800 ms"). The error budget is the allowed bad share
    (1 - objective) over `period_days`; burn rate and budget consumed follow (docs/decisions.md)."""

    objective: float = Field(gt=0, lt=1)
    good_below: float
    period_days: int = Field(default=28, ge=1, le=366)


class Metric(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    kind: Literal["binary", "continuous", "count", "ratio", "quantile"]
    description: str = ""
    source: str | None = Field(default=None, pattern=NAME_PATTERN)
    aggregation: Literal["sum", "count", "max"] = "sum"
    numerator: Aggregate | None = None
    denominator: Aggregate | None = None
    q: float | None = Field(default=None, gt=0, lt=1)
    direction: Literal["higher", "lower"] = "higher"
    winsorize: float | None = Field(default=None, gt=0.5, le=1)
    # absolute, in the metric's unit (e.g. 0.002 = 0.2 pp of error rate, 25 = 25 ms)
    non_inferiority_margin: float | None = Field(default=None, ge=0)
    unit: str | None = Field(default=None, max_length=16)  # shown with numbers: "ms", "USD", "pp"
    slo: SLO | None = None

    @model_validator(mode="after")
    def _kind_fields(self) -> "Metric":
        if self.kind == "ratio":
            if not (self.numerator and self.denominator):
                raise ValueError("a ratio metric needs numerator and denominator")
        elif not self.source:
            raise ValueError(f"a {self.kind} metric needs a source metric name")
        if self.kind == "quantile" and self.q is None:
            raise ValueError("a quantile metric needs q (e.g. 0.95)")
        return self

    @property
    def event_source(self) -> str:
        """The telemetry metric whose events an SLO counts (a ratio's numerator events)."""
        return self.numerator.source if self.kind == "ratio" else self.source

    @property
    def effective_winsorize(self) -> float | None:
        """Continuous metrics are capped at P99.9 unless they say otherwise (docs/architecture.md §5a)."""
        if self.winsorize is not None:
            return None if self.winsorize >= 1 else self.winsorize
        return 0.999 if self.kind == "continuous" else None


class OwnerRoute(_Strict):
    """Where an owner's pages go (`owners:` in experiments.yaml); tokens and URLs stay in the environment."""

    slack_channel: str | None = Field(default=None, pattern=r"^[#@]?[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")


# The formats a dump folder may hold (`sources.yaml`); each is mapped to the contract at ingestion.
SOURCE_FORMATS = ("contract", "growthbook", "segment", "otel")
SOURCE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"  # a folder under raw/


# A property (segment: `revenue`, `order.total` for a nested one) or an attribute key (otel:
# `order.amount`); never holds a quote, so it can be quoted into a JSON path.
PROPERTY_PATTERN = ATTRIBUTE_PATH_PATTERN
EVENT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 _.:/()&'-]{0,127}$"  # "Order Completed", "checkout:done"


class SourceMetric(_Strict):
    """An event of an SDK source that is an outcome (a Segment `track` event, an OpenTelemetry log
    event name): its metric name and the property / attribute holding its value (absent: each
    event counts 1)."""

    event: str = Field(pattern=EVENT_NAME_PATTERN)
    metric: str = Field(pattern=NAME_PATTERN)
    value: str | None = Field(default=None, pattern=PROPERTY_PATTERN)


class Source(_Strict):
    """One dump folder (`raw/<name>/`) and the format its SDK writes (docs/telemetry.md, Source
    formats). A folder not listed is `contract`."""

    name: str = Field(pattern=SOURCE_NAME_PATTERN)
    format: str = "contract"
    # the unit: growthbook `hash_value` (what the SDK hashed, the default) or `user_id`; segment
    # `user_id` (userId, else anonymousId: the default) or `anonymous_id`; otel `context_id`
    # (the `feature_flag.context.id` attribute, else `user.id`)
    unit: Literal["hash_value", "user_id", "anonymous_id", "context_id"] | None = None
    # segment / otel: the event that is an exposure (default `Experiment Viewed` /
    # `feature_flag.evaluation`), and the ones that are outcomes
    exposure_event: str | None = Field(default=None, pattern=EVENT_NAME_PATTERN)
    metrics: list[SourceMetric] = Field(default_factory=list)

    @model_validator(mode="after")
    def _options_fit_the_format(self) -> "Source":
        units = {"growthbook": ("hash_value", "user_id"), "segment": ("user_id", "anonymous_id"),
                 "otel": ("context_id",)}
        if self.unit is not None and self.unit not in units.get(self.format, ()):
            raise ValueError(f"unit {self.unit!r} does not apply to format {self.format!r}"
                             + (f" (one of {list(units[self.format])})" if self.format in units else ""))
        if (self.metrics or self.exposure_event) and self.format not in ("segment", "otel"):
            raise ValueError(f"metrics / exposure_event: only segment and otel sources map events, not {self.format!r}")
        events = [m.event for m in self.metrics] + [self.exposure_event_name]
        if len(set(events)) != len(events):
            raise ValueError("each track event maps once (metrics[].event and exposure_event must differ)")
        return self

    @property
    def unit_setting(self) -> str:
        return self.unit or {"growthbook": "hash_value", "segment": "user_id", "otel": "context_id"}.get(
            self.format, "user_id")

    @property
    def exposure_event_name(self) -> str:
        return self.exposure_event or ("feature_flag.evaluation" if self.format == "otel" else "Experiment Viewed")

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in SOURCE_FORMATS:
            raise ValueError(f"format {value!r} is not one of {list(SOURCE_FORMATS)}")
        return value


class Registry(_Strict):
    experiments: list[Experiment]
    metrics: list[Metric]
    owners: dict[str, OwnerRoute] = Field(default_factory=dict)
    sources: list[Source] = Field(default_factory=list)

    def source_format(self, folder: str) -> Source:
        """How the folder `raw/<folder>/` is read (`contract` when `sources.yaml` does not list it)."""
        for source in self.sources:
            if source.name == folder:
                return source
        return Source(name=folder) if re.match(SOURCE_NAME_PATTERN, folder) else Source(name="unnamed")

    @model_validator(mode="after")
    def _references(self) -> "Registry":
        # Counter, not list.count: a registry of many entries must not take quadratic time
        dupes = {i for i, n in Counter(e.id for e in self.experiments).items() if n > 1}
        if dupes:
            raise ValueError(f"duplicate experiment ids: {sorted(dupes)}")
        folders = {i for i, n in Counter(src.name for src in self.sources).items() if n > 1}
        if folders:
            raise ValueError(f"sources listed more than once: {sorted(folders)}")
        names = [m.name for m in self.metrics]
        dupes = {i for i, n in Counter(names).items() if n > 1}
        if dupes:
            raise ValueError(f"duplicate metric names: {sorted(dupes)}")
        owners = Counter(f.sdk_key for e in self.experiments for f in e.factors if f.sdk_key)
        shared = sorted(k for k, n in owners.items() if n > 1)
        if shared:  # an exposure under that key could not be told apart
            raise ValueError(f"sdk_key used by more than one experiment: {shared}")
        known = set(names)
        for exp in self.experiments:
            for metric, _role in exp.metrics.by_role():
                if metric not in known:
                    raise ValueError(f"experiment {exp.id!r} uses unknown metric {metric!r}")
        return self

    def experiment(self, experiment_id: str) -> Experiment:
        for e in self.experiments:
            if e.id == experiment_id:
                return e
        raise KeyError(experiment_id)

    def metric(self, name: str) -> Metric:
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(name)
