"""Registry governance lint: problems a person must fix in `experiments.yaml` before trusting results.

`load_registry` stops at the first invalid entry, which is right for the pipeline but useless for a
review: a lint should list *every* problem at once. So this module reads the raw YAML entries,
validates each experiment and metric on its own, turns validation failures into rows, and then runs
the cross-experiment rules (overlaps, flags) on the entries that did validate. Nothing raises for a
bad registry; only a programming error would.

Rules, in report order (`RULES`); severity ERROR means results from the registry cannot be trusted
(or it does not load), WARN means a person should look:

- `invalid_registry` (ERROR): unreadable file, bad YAML, or a schema error not covered by a rule
  below (pydantic's message with the path inside the file).
- `duplicate_id` (ERROR): an experiment id (or metric name) defined more than once.
- `unknown_metric` (ERROR): primary/secondary/guardrail metric not in `metrics.yaml`.
- `missing_control` (ERROR): a factor without `control`, or a control that is not one of its levels.
- `missing_owner`, `missing_hypothesis` (ERROR): absent, blank or a placeholder (TBD, TODO, n/a, ...).
- `level_not_in_flag_variants` (ERROR): a draft/running factor level its flag cannot serve.
- `overlap_without_orthogonality`: two *running* experiments whose date ranges overlap (no end date =
  open-ended) and that share a flag key (ERROR: one flag cannot randomise two experiments
  independently), or share unit type and layer, both having no layer counting as the same default
  layer (WARN: the layer is the hash salt, so equal salts correlate their assignments). Experiments
  in different layers are orthogonal; so are experiments whose SDK hashes with different `seed`s
  (the seed, when set, is the salt instead of the layer) or different `hash_attribute`s. One row per
  pair, under the id that sorts first.
- `past_end_running` (WARN): status `running` and `end_date` before `today`.
- `factor_without_flag` (WARN): a draft/running factor with no `flag_key`, or one that no flag file
  defines (the stale-flag audit reports the latter as `missing` too).
- `correlated_flag_buckets` (ERROR): two factors of one draft/running experiment served by flags whose
  `fractional` targeting buckets units by the same explicit expression without the flag key (e.g.
  `{"var": "targetingKey"}` alone): each unit lands in the same bucket position for every flag, so
  the factors are served correlated and the factorial cannot separate them. flagd's default (no
  bucket expression) salts with the flag key.

Flag-dependent rules skip stopped/concluded experiments: their flags may legitimately be gone or
trimmed. Output is sorted by severity, rule order, experiment id and detail, so re-runs match.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import ValidationError

from ..audit.flagd import FlagDefinition
from .loader import RegistryError, load_registry, read_registry_yaml
from .models import Experiment, Metric, Registry

LINT_COLUMNS = ["severity", "rule", "experiment_id", "detail"]
RULES = (
    "invalid_registry", "duplicate_id", "unknown_metric", "missing_control", "missing_owner", "missing_hypothesis",
    "level_not_in_flag_variants", "correlated_flag_buckets", "overlap_without_orthogonality", "past_end_running",
    "factor_without_flag",
)
SEVERITIES = ("ERROR", "WARN")
PLACEHOLDERS = {"", "tbd", "todo", "n/a", "na", "none", "null", "-", "?", "unknown", "xxx"}
LIVE_STATUSES = {"draft", "running"}
_METRIC_ROLES = ("primary", "secondary", "guardrails")


def _row(severity: str, rule: str, experiment_id: str | None, detail: str) -> dict:
    return {"severity": severity, "rule": rule, "experiment_id": experiment_id, "detail": detail}


def _loc(parts: tuple) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _is_missing_text(value: Any) -> bool:
    return not isinstance(value, str) or value.strip().lower() in PLACEHOLDERS


def _covered_by_rule(err: dict) -> bool:
    """Schema errors a dedicated rule already reports (so a problem yields one row, not two)."""
    loc = err["loc"]
    if loc and loc[0] in ("owner", "hypothesis"):
        return True
    return bool(loc) and loc[0] == "factors" and ("control" in loc or "control level" in err["msg"])


def _schema_rows(where: str, experiment_id: str | None, exc: ValidationError, skip_covered: bool) -> list[dict]:
    return [
        _row("ERROR", "invalid_registry", experiment_id, f"{where}{_loc(tuple(err['loc']))}: {err['msg']}")
        for err in exc.errors()
        if not (skip_covered and _covered_by_rule(err))
    ]


def _duplicates(names: list[tuple[int, Any]], what: str, section: str, experiments: bool) -> list[dict]:
    positions: dict[str, list[int]] = defaultdict(list)
    for i, name in names:
        if isinstance(name, str):
            positions[name].append(i)
    return [
        _row("ERROR", "duplicate_id", name if experiments else None,
             f"{what} {name!r} is defined {len(pos)} times: " + ", ".join(f"{section}[{i}]" for i in pos))
        for name, pos in positions.items() if len(pos) > 1
    ]


def _raw_experiment_rows(raw: dict, where: str, known_metrics: set[str] | None) -> list[dict]:
    """Rules on one raw entry; they must work where pydantic rejects the entry outright."""
    exp_id = raw.get("id") if isinstance(raw.get("id"), str) else None
    rows = []
    for field, rule in (("owner", "missing_owner"), ("hypothesis", "missing_hypothesis")):
        if _is_missing_text(raw.get(field)):
            rows.append(_row("ERROR", rule, exp_id, f"{where}.{field}: {raw.get(field)!r} is missing, blank "
                             f"or a placeholder; every experiment needs an accountable {field}"))
    factors = raw.get("factors")
    for j, factor in enumerate(factors if isinstance(factors, list) else []):
        if not isinstance(factor, dict):
            continue
        control, levels = factor.get("control"), factor.get("levels")
        name = factor.get("name", f"#{j}")
        if control is None:
            rows.append(_row("ERROR", "missing_control", exp_id,
                             f"{where}.factors[{j}].control: factor {name!r} declares no control level"))
        elif isinstance(levels, list) and control not in levels:
            rows.append(_row("ERROR", "missing_control", exp_id,
                             f"{where}.factors[{j}].control: {control!r} is not one of factor {name!r}'s "
                             f"levels {levels}"))
    metrics = raw.get("metrics")
    if known_metrics is not None and isinstance(metrics, dict):
        for role in _METRIC_ROLES:
            names = metrics.get(role)
            for k, metric in enumerate(names if isinstance(names, list) else []):
                if isinstance(metric, str) and metric not in known_metrics:
                    rows.append(_row("ERROR", "unknown_metric", exp_id,
                                     f"{where}.metrics.{role}[{k}]: {metric!r} is not defined in metrics.yaml"))
    return rows


def _end(exp: Experiment) -> dt.date:
    return exp.end_date or dt.date.max


def _overlap_rows(running: list[tuple[str, Experiment]]) -> list[dict]:
    rows = []
    ordered = sorted(running, key=lambda pair: (pair[1].id, pair[0]))
    for a_pos, (a_where, a) in enumerate(ordered):
        for b_where, b in ordered[a_pos + 1:]:
            if a.id == b.id or a.start_date > _end(b) or b.start_date > _end(a):
                continue  # same id: reported as duplicate_id; disjoint dates: no overlap
            start, end = max(a.start_date, b.start_date), min(_end(a), _end(b))
            period = f"{start.isoformat()} to {'open end' if end == dt.date.max else end.isoformat()}"
            shared = sorted({f.flag_key for f in a.factors if f.flag_key} & {f.flag_key for f in b.factors})
            if shared:
                rows.append(_row("ERROR", "overlap_without_orthogonality", a.id,
                                 f"{a_where}: shares flag(s) {', '.join(map(repr, shared))} with running "
                                 f"experiment {b.id!r} ({b_where}) from {period}; one flag cannot randomise "
                                 f"two experiments independently"))
            elif a.unit == b.unit and a.hash_attribute == b.hash_attribute and a.hash_salt == b.hash_salt:
                kind, salt = a.hash_salt
                layer = (f"seed {salt!r}" if kind == "seed" else f"layer {salt!r}" if salt
                         else "the default layer (neither sets `layer` or `seed`)")
                rows.append(_row("WARN", "overlap_without_orthogonality", a.id,
                                 f"{a_where}: runs on unit {a.unit!r} in {layer} together with {b.id!r} "
                                 f"({b_where}) from {period}; the same hash salt correlates their assignments: "
                                 f"give them different layers (or SDK seeds) or run them one after the other"))
    return rows


def _flag_rows(where: str, exp: Experiment, flags_by_key: dict[str, FlagDefinition]) -> list[dict]:
    rows = []
    for j, factor in enumerate(exp.factors):
        at = f"{where}.factors[{j}]"
        if not factor.flag_key:
            rows.append(_row("WARN", "factor_without_flag", exp.id,
                             f"{at}: factor {factor.name!r} has no flag_key; nothing ties its assignment to a "
                             f"feature flag and the stale-flag audit cannot follow it"))
            continue
        flag = flags_by_key.get(factor.flag_key)
        if flag is None:
            rows.append(_row("WARN", "factor_without_flag", exp.id,
                             f"{at}.flag_key: flag {factor.flag_key!r} of factor {factor.name!r} is not defined "
                             f"in any flag file"))
            continue
        absent = [lvl for lvl in factor.levels if lvl not in flag.variants]
        if absent:
            rows.append(_row("ERROR", "level_not_in_flag_variants", exp.id,
                             f"{at}.levels: {', '.join(map(repr, absent))} of factor {factor.name!r} are not "
                             f"variants of flag {flag.key!r} ({flag.source_file}: "
                             f"{', '.join(map(repr, flag.variants))}); those cells can never be served"))
    return rows


def _bucket_keys(node: Any, depth: int = 0) -> set[str]:
    """The explicit bucketing expressions (as canonical JSON) of every `fractional` in a targeting
    rule; flagd's default bucketing (no expression) salts with the flag key and is left out."""
    found: set[str] = set()
    if depth > 64:
        return found
    if isinstance(node, dict):
        for op, args in node.items():
            if op == "fractional" and isinstance(args, list) and args and isinstance(args[0], dict):
                text = json.dumps(args[0], sort_keys=True)
                if "$flagd.flagKey" not in text:
                    found.add(text)
            found |= _bucket_keys(args, depth + 1)
    elif isinstance(node, list):
        for item in node:
            found |= _bucket_keys(item, depth + 1)
    return found


def _bucket_rows(where: str, exp: Experiment, flags_by_key: dict[str, FlagDefinition]) -> list[dict]:
    served = [(f, flags_by_key[f.flag_key]) for f in exp.factors if f.flag_key in flags_by_key]
    rows = []
    for i, (fa, flag_a) in enumerate(served):
        for fb, flag_b in served[i + 1:]:
            if flag_a.key == flag_b.key:
                continue
            shared = sorted(_bucket_keys(flag_a.targeting) & _bucket_keys(flag_b.targeting))
            if shared:
                rows.append(_row("ERROR", "correlated_flag_buckets", exp.id,
                                 f"{where}: factors {fa.name!r} and {fb.name!r} are served by flags {flag_a.key!r} and "
                                 f"{flag_b.key!r}, which bucket units by the same {shared[0]} without the flag key: "
                                 "every unit gets the same bucket in both, so the factors are served correlated; "
                                 "bucket by {\"cat\": [{\"var\": \"$flagd.flagKey\"}, {\"var\": \"targetingKey\"}]} "
                                 "(or give no bucketing expression: flagd's default)"))
    return rows


def _frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=LINT_COLUMNS).drop_duplicates(ignore_index=True)
    frame["_s"] = frame["severity"].map(SEVERITIES.index)
    frame["_r"] = frame["rule"].map(RULES.index)
    frame = frame.sort_values(["_s", "_r", "experiment_id", "detail"], na_position="first", kind="stable")
    return frame.drop(columns=["_s", "_r"]).reset_index(drop=True)


def lint_raw_registry(
    raw_experiments: list[Any],
    raw_metrics: list[Any] | None,
    flags: list[FlagDefinition] | None,
    today: dt.date,
    *,
    experiments_file: str = "experiments.yaml",
    metrics_file: str = "metrics.yaml",
) -> pd.DataFrame:
    """Lint raw YAML entries (the `experiments:` and `metrics:` lists); columns `LINT_COLUMNS`.

    `raw_metrics=None` means the metric catalogue could not be read: `unknown_metric` is skipped
    rather than flagging every metric; `flags=None` means the flag files could not be read, so the
    flag rules (`level_not_in_flag_variants`, `factor_without_flag`) are skipped; `[]` means there
    are no flags. File names only prefix the `detail` paths.
    """
    rows: list[dict] = []
    known_metrics = None
    metrics: list[Metric] = []
    if raw_metrics is not None:
        known_metrics = {m["name"] for m in raw_metrics if isinstance(m, dict) and isinstance(m.get("name"), str)}
        names = [(i, m.get("name") if isinstance(m, dict) else None) for i, m in enumerate(raw_metrics)]
        rows += [{**r, "detail": f"{metrics_file}: {r['detail']}"}
                 for r in _duplicates(names, "metric name", "metrics", experiments=False)]
        for i, raw in enumerate(raw_metrics):
            try:
                metrics.append(Metric.model_validate(raw))
            except ValidationError as exc:
                rows += _schema_rows(f"{metrics_file}: metrics[{i}]", None, exc, skip_covered=False)
    ids = [(i, e.get("id") if isinstance(e, dict) else None) for i, e in enumerate(raw_experiments)]
    rows += [{**r, "detail": f"{experiments_file}: {r['detail']}"}
             for r in _duplicates(ids, "experiment id", "experiments", experiments=True)]
    valid: list[tuple[str, Experiment]] = []
    for i, raw in enumerate(raw_experiments):
        where = f"{experiments_file}: experiments[{i}]"
        if not isinstance(raw, dict):
            rows.append(_row("ERROR", "invalid_registry", None, f"{where}: an experiment must be a mapping"))
            continue
        rows += _raw_experiment_rows(raw, where, known_metrics)
        exp_id = raw.get("id") if isinstance(raw.get("id"), str) else None
        try:
            valid.append((where, Experiment.model_validate(raw)))
        except ValidationError as exc:
            rows += _schema_rows(where, exp_id, exc, skip_covered=True)
            # A missing owner/hypothesis is already a row; still run the cross rules on the rest.
            patched = {**raw, **{k: "(missing)" for k in ("owner", "hypothesis") if _is_missing_text(raw.get(k))}}
            if patched != raw:
                try:
                    valid.append((where, Experiment.model_validate(patched)))
                except ValidationError:
                    pass
    flags_by_key = {f.key: f for f in flags or []}
    for where, exp in valid:
        if exp.status == "running" and exp.end_date and exp.end_date < today:
            rows.append(_row("WARN", "past_end_running", exp.id,
                             f"{where}.end_date: {exp.end_date.isoformat()} passed "
                             f"{(today - exp.end_date).days} days ago but status is still running; "
                             f"set stopped/concluded or extend end_date"))
        if exp.status in LIVE_STATUSES and flags is not None:
            rows += _flag_rows(where, exp, flags_by_key)
            rows += _bucket_rows(where, exp, flags_by_key)
    rows += _overlap_rows([(w, e) for w, e in valid if e.status == "running"])
    if not any(r["severity"] == "ERROR" for r in rows) and raw_metrics is not None:
        try:  # safety net: whatever else the full model rejects must not pass the lint
            Registry(experiments=[e for _, e in valid], metrics=metrics)
        except ValidationError as exc:
            rows += _schema_rows(f"{experiments_file}: registry", None, exc, skip_covered=False)
    return _frame(rows)


def lint_registry(registry: Registry, flags: list[FlagDefinition] | None, today: dt.date) -> pd.DataFrame:
    """Lint an already loaded registry (only the cross-experiment and flag rules can fire on it)."""
    return lint_raw_registry(
        [e.model_dump(mode="json") for e in registry.experiments],
        [m.model_dump(mode="json") for m in registry.metrics], flags, today,
    )


def _read_list(path: Path, key: str) -> tuple[list[Any] | None, list[dict]]:
    """The `key:` list of a YAML file, or None plus an `invalid_registry` row saying why not."""
    def bad(why: str) -> tuple[None, list[dict]]:
        return None, [_row("ERROR", "invalid_registry", None, f"{path.name}: {why}")]

    try:  # the loader's reader: same refusals (links, size, encoding, aliases, duplicates, depth)
        data = read_registry_yaml(path, path.name)
    except RegistryError as exc:
        return None, [_row("ERROR", "invalid_registry", None, " ".join(str(exc).split()))]
    items = data.get(key)
    if items is None:
        return [], []
    if not isinstance(items, list):
        return bad(f"{key}: expected a list")
    return items, []


def lint_registry_dir(
    registry_dir: str | Path, flags: list[FlagDefinition] | None, today: dt.date
) -> pd.DataFrame:
    """Lint `registry_dir/experiments.yaml` + `metrics.yaml`; never raises for a bad registry.

    Guarantee: if `load_registry(registry_dir)` would fail, the result holds at least one ERROR.
    """
    registry_dir = Path(registry_dir)
    experiments, exp_rows = _read_list(registry_dir / "experiments.yaml", "experiments")
    metrics, met_rows = _read_list(registry_dir / "metrics.yaml", "metrics")
    frame = lint_raw_registry(experiments or [], metrics, flags, today)
    extra = exp_rows + met_rows
    if not extra and not (frame["severity"] == "ERROR").any():
        try:
            load_registry(registry_dir)
        except RegistryError as exc:
            extra.append(_row("ERROR", "invalid_registry", None, " ".join(str(exc).split())))
    return _frame(frame.to_dict("records") + extra) if extra else frame
