"""Parse feature-flag definitions in the OpenFeature flagd JSON format (and a simple CSV export).

The stale-flag audit needs to know, for every flag, which variants it can still *serve*: a flag that
serves one variant is rolled out; one that still serves several is an experiment (or leftover) in
progress. flagd decides through JsonLogic `targeting`, so this module reads that logic statically:

- `fractional` buckets `["variant", weight]` with weight > 0 (a bucket without weight counts as 1,
  as in flagd) can be served;
- string results of `if` branches (positions 1, 3, ... and the trailing else) are variant names;
- `{"$ref": "name"}` is resolved against the file's top-level `$evaluators`;
- the defaultVariant is always counted. A DISABLED flag is treated by flagd as if it did not exist,
  so the SDK returns the application's in-code default; the audit records `{defaultVariant}` as its
  single served variant and says "in-code default" where that distinction matters.

Rollout dates: `metadata.rolled_out_at` (preferred) or `metadata.last_modified` (a flag's own, else the
flag set's) date the flag's current shape; for a flag that now serves one variant either is a lower
bound on how long it has done so, which is what the audit's `fully_rolled_out` class needs. Both must
be ISO-8601 dates or date-times, so a typo fails the load instead of silently disabling that class.

`rollout_variant` is the one variant every evaluation returns, or None: the only served variant,
the defaultVariant of a DISABLED flag, or the single result of targeting that always yields a value
(a `fractional` with one positive bucket, an `if` whose every branch including the else does). The
defaultVariant is then only a fallback for evaluation errors, so `["b", 100], ["a", 0]` with
default `a` counts as rolled out to `b` even though `served_variants` conservatively holds both.

Variant names found in targeting that are not among `variants` are kept apart
(`unknown_targeted_variants`) instead of failing the load, so the audit can report them as
`invalid_targeting`. Everything else that flagd itself would reject raises `FlagFileError` with the
file, the JSON path and the reason, so the person fixing it does not have to hunt.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FLAG_STATES = ("ENABLED", "DISABLED")
_SIMPLE_KEY = re.compile(r"^[A-Za-z0-9_$-]+$")


class FlagFileError(ValueError):
    """A flag file cannot be used; the message names the file, the JSON path and the reason."""


@dataclass(frozen=True)
class FlagDefinition:
    """One flag as the audit sees it: what it is, where it lives, and what it can serve."""

    key: str
    state: str
    variants: dict[str, Any]
    default_variant: str
    targeting: dict[str, Any]
    source_file: str
    metadata: dict[str, Any] = field(default_factory=dict)
    served_variants: frozenset[str] = frozenset()
    unknown_targeted_variants: frozenset[str] = frozenset()
    rollout_variant: str | None = None  # what everyone gets, when that is one variant (see module doc)

    @property
    def changed_on(self) -> dt.date | None:
        """Date of the flag's current shape: `rolled_out_at`, else `last_modified`, else unknown."""
        for key in ROLLOUT_DATE_KEYS:
            if key in self.metadata:
                return parse_metadata_date(self.metadata[key])
        return None


ROLLOUT_DATE_KEYS = ("rolled_out_at", "last_modified")


def parse_metadata_date(value: Any) -> dt.date | None:
    """ISO date or date-time (`2026-11-01`, `2026-11-01T10:00:00Z`) -> date in UTC; ValueError otherwise."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, dt.datetime):
        return (value.astimezone(dt.timezone.utc) if value.tzinfo else value).date()
    if isinstance(value, dt.date):
        return value
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not an ISO-8601 date")
    text = value.strip()
    try:
        if len(text) == 10:
            return dt.date.fromisoformat(text)
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO-8601 date (expected e.g. 2026-11-01)") from None
    return (parsed.astimezone(dt.timezone.utc) if parsed.tzinfo else parsed).date()


def _check_dates(metadata: dict[str, Any], fail, where_prefix) -> None:
    for key in ROLLOUT_DATE_KEYS:
        if key in metadata:
            try:
                parse_metadata_date(metadata[key])
            except ValueError as exc:
                raise fail(where_prefix(key), str(exc)) from None


def _path(*parts: str) -> str:
    """Dotted JSON path; keys that are not plain identifiers are bracketed so the path is unambiguous."""
    out = ""
    for part in parts:
        if part.startswith("["):
            out += part
        elif _SIMPLE_KEY.match(part):
            out += ("." if out else "") + part
        else:
            out += f"[{json.dumps(part)}]"
    return out


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json.loads silently keeps the last of two equal keys; a flag defined twice is a bug to report."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


class _DuplicateKey(Exception):
    pass


def _targeted_names(node: Any, evaluators: dict[str, Any], seen_refs: tuple[str, ...] = ()) -> set[str]:
    """Variant names a JsonLogic expression can return (static scan, see module docstring)."""
    names: set[str] = set()
    if isinstance(node, list):
        for item in node:
            names |= _targeted_names(item, evaluators, seen_refs)
        return names
    if not isinstance(node, dict):
        return names
    for op, args in node.items():
        if op == "$ref" and isinstance(args, str):
            if args in evaluators and args not in seen_refs:
                names |= _targeted_names(evaluators[args], evaluators, (*seen_refs, args))
        elif op == "fractional" and isinstance(args, list):
            for bucket in args:
                if isinstance(bucket, list) and bucket and isinstance(bucket[0], str):
                    weight = bucket[1] if len(bucket) > 1 else 1
                    if isinstance(weight, (int, float)) and not isinstance(weight, bool) and weight > 0:
                        names.add(bucket[0])
                else:  # the bucketing expression, e.g. {"var": "targetingKey"} or a "cat"
                    names |= _targeted_names(bucket, evaluators, seen_refs)
        elif op == "if" and isinstance(args, list):
            results = [args[i] for i in range(1, len(args), 2)]
            if len(args) % 2 == 1 and len(args) > 1:
                results.append(args[-1])
            for result in results:
                if isinstance(result, str):
                    names.add(result)
                else:
                    names |= _targeted_names(result, evaluators, seen_refs)
        else:  # conditions (==, in, sem_ver, ...) never name a variant, but may nest an `if` result
            if isinstance(args, (dict, list)):
                names |= _nested_results(args, evaluators, seen_refs)
    return names


def _always_returns(node: Any, evaluators: dict[str, Any], seen_refs: tuple[str, ...] = ()) -> set[str] | None:
    """Variant names `node` can return if it never returns null, else None (unknown or may be null)."""
    if isinstance(node, str):
        return {node}
    if not isinstance(node, dict) or len(node) != 1:
        return None
    (op, args), = node.items()
    if op == "$ref" and isinstance(args, str) and args in evaluators and args not in seen_refs:
        return _always_returns(evaluators[args], evaluators, (*seen_refs, args))
    if op == "fractional" and isinstance(args, list):
        buckets = args[1:] if args and not isinstance(args[0], list) else args
        names = {b[0] for b in buckets if isinstance(b, list) and b and (len(b) == 1 or b[1] > 0)}
        return names or None
    if op == "if" and isinstance(args, list) and len(args) >= 3 and len(args) % 2 == 1:
        results = [_always_returns(args[i], evaluators, seen_refs) for i in range(1, len(args), 2)]
        results.append(_always_returns(args[-1], evaluators, seen_refs))
        return None if any(r is None for r in results) else set().union(*results)
    return None


def _rollout_variant(
    state: str, default: str, targeting: dict, evaluators: dict, served: frozenset[str], unknown: frozenset[str]
) -> str | None:
    if state == "DISABLED" or not targeting:
        return default
    if unknown:  # some evaluations fail (unknown variant): not everyone gets the same thing
        return None
    if len(served) == 1:
        return next(iter(served))
    always = _always_returns(targeting, evaluators)
    return next(iter(always)) if always is not None and len(always) == 1 and always <= served else None


def _nested_results(args: Any, evaluators: dict[str, Any], seen_refs: tuple[str, ...]) -> set[str]:
    """Only `if`/`fractional`/`$ref` nodes produce variant names; look for them below an operator."""
    items = args if isinstance(args, list) else [args]
    names: set[str] = set()
    for item in items:
        if isinstance(item, dict) and any(k in item for k in ("if", "fractional", "$ref")):
            names |= _targeted_names(item, evaluators, seen_refs)
    return names


def parse_flag_document(document: Any, source_file: str) -> list[FlagDefinition]:
    """Validate one parsed flagd document and return its flags, in file order."""

    def fail(where: str, why: str) -> FlagFileError:
        return FlagFileError(f"{source_file}: {where}: {why}")

    if not isinstance(document, dict):
        raise fail("$", "the top level must be a JSON object")
    flags = document.get("flags")
    if not isinstance(flags, dict):
        raise fail("flags", "missing or not an object (expected {flag_key: {...}})")
    evaluators = document.get("$evaluators") or {}
    if not isinstance(evaluators, dict):
        raise fail("$evaluators", "must be an object")
    set_metadata = document.get("metadata") or {}  # flag-set metadata; a flag's own keys win
    if not isinstance(set_metadata, dict):
        raise fail("metadata", "must be an object")
    _check_dates(set_metadata, fail, lambda k: _path("metadata", k))
    for name, rule in evaluators.items():
        _check_fractional(rule, fail, _path("$evaluators", name))
    out: list[FlagDefinition] = []
    for key, spec in flags.items():

        def where(*parts: str, _key: str = key) -> str:
            return _path("flags", _key, *parts)

        if not key:
            raise fail("flags", "empty flag key")
        if not isinstance(spec, dict):
            raise fail(where(), "a flag must be an object")
        state = spec.get("state")
        if state not in FLAG_STATES:
            raise fail(where("state"), f"{state!r} is not one of {', '.join(FLAG_STATES)}")
        variants = spec.get("variants")
        if not isinstance(variants, dict) or not variants:
            raise fail(where("variants"), "missing or empty (expected {variant_name: value})")
        default = spec.get("defaultVariant")
        known = ", ".join(variants)
        if not isinstance(default, str):
            raise fail(where("defaultVariant"), f"missing or not a string (known: {known})")
        if default not in variants:
            raise fail(where("defaultVariant"), f"{default!r} is not a variant (known: {known})")
        targeting = spec.get("targeting")
        targeting = {} if targeting is None else targeting
        if not isinstance(targeting, dict):
            raise fail(where("targeting"), "must be a JsonLogic object (or {})")
        metadata = spec.get("metadata")
        metadata = {} if metadata is None else metadata
        if not isinstance(metadata, dict):
            raise fail(where("metadata"), "must be an object")
        _check_dates(metadata, fail, lambda k, _w=where: _w("metadata", k))
        _check_fractional(targeting, fail, where("targeting"))
        for ref in _refs(targeting):
            if ref not in evaluators:
                raise fail(where("targeting"), f"$ref {ref!r} is not defined in $evaluators")
        named = _targeted_names(targeting, evaluators) if state == "ENABLED" else set()
        served = frozenset({default} | (named & set(variants)))
        unknown = frozenset(named - set(variants))
        out.append(
            FlagDefinition(
                key=key,
                state=state,
                variants=dict(variants),
                default_variant=default,
                targeting=targeting,
                source_file=source_file,
                metadata={**set_metadata, **metadata},
                served_variants=served,
                unknown_targeted_variants=unknown,
                rollout_variant=_rollout_variant(state, default, targeting, evaluators, served, unknown),
            )
        )
    return out


def _check_fractional(node: Any, fail, where: str) -> None:
    """flagd rejects malformed `fractional` buckets at evaluation time; reject them at load instead.

    After an optional bucketing expression (an object), every argument must be `[variant]` or
    `[variant, weight]` with a non-negative numeric weight, and at least one weight must be positive.
    """
    if isinstance(node, list):
        for item in node:
            _check_fractional(item, fail, where)
        return
    if not isinstance(node, dict):
        return
    for op, args in node.items():
        if op != "fractional":
            _check_fractional(args, fail, where)
            continue
        if not isinstance(args, list):
            raise fail(where, "fractional: expects a list of [variant, weight] buckets")
        buckets = args[1:] if args and not isinstance(args[0], list) else args
        total = 0.0
        for i, bucket in enumerate(buckets, start=1):
            ok_name = isinstance(bucket, list) and 1 <= len(bucket) <= 2 and isinstance(bucket[0], str)
            weight = (bucket[1] if len(bucket) == 2 else 1) if ok_name else None
            ok_weight = isinstance(weight, (int, float)) and not isinstance(weight, bool) and weight >= 0
            if not (ok_name and ok_weight):
                raise fail(where, f"fractional bucket {i} {json.dumps(bucket)}: expected [variant, weight >= 0]")
            total += weight
        if total <= 0:
            raise fail(where, "fractional: needs at least one bucket with a positive weight")


def _refs(node: Any) -> set[str]:
    if isinstance(node, list):
        return set().union(*(_refs(n) for n in node)) if node else set()
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(_refs(v) for v in node.values()))
    return set()


def _display_name(path: Path, flags_dir: Path) -> str:
    """`flags/checkout.json`: short, stable across machines (audit output must not depend on cwd)."""
    try:
        return path.relative_to(flags_dir.parent).as_posix()
    except ValueError:
        return path.name


def load_flag_file(path: str | Path, display_name: str | None = None) -> list[FlagDefinition]:
    """Read one flagd JSON file; invalid JSON fails with its line and column."""
    path = Path(path)
    name = display_name or path.name
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FlagFileError(f"{name}: cannot read: {exc}") from exc
    try:
        document = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise FlagFileError(f"{name}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc
    except _DuplicateKey as exc:
        raise FlagFileError(f"{name}: duplicate key {exc.args[0]!r} in a JSON object") from exc
    return parse_flag_document(document, name)


def load_flag_files(flags_dir: str | Path) -> list[FlagDefinition]:
    """Every flag of every `*.json` in `flags_dir`, files in name order; a key defined twice fails."""
    flags_dir = Path(flags_dir)
    if not flags_dir.is_dir():
        raise FlagFileError(f"{flags_dir}: flags directory not found")
    flags: list[FlagDefinition] = []
    defined_in: dict[str, str] = {}
    for path in sorted(flags_dir.glob("*.json")):
        for flag in load_flag_file(path, _display_name(path, flags_dir)):
            if flag.key in defined_in:
                raise FlagFileError(
                    f"{flag.source_file}: {_path('flags', flag.key)}: flag also defined in {defined_in[flag.key]}"
                )
            defined_in[flag.key] = flag.source_file
            flags.append(flag)
    return flags
