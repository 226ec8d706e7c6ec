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

A flag file is untrusted input read every night, so it cannot hang or crash the audit: it is read
under `mvt_pipeline/safe_files.py` (no symlinks, regular file, `MAX_FLAG_FILE_BYTES`, UTF-8), nests at
most `MVT_MAX_JSON_DEPTH` levels below the flag (checked before any walk, and on the text when
json.loads itself gives up), every walk uses an explicit stack, and each `$evaluators` entry is
scanned once, in dependency order (a `$ref` cycle fails the file).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import settings
from ..safe_files import UnsafeFileError, check_dir, read_text

FLAG_STATES = ("ENABLED", "DISABLED")
# Levels above a targeting rule: the top object, `flags`, the flag. The rule itself may nest
# `settings().limits.max_json_depth` levels, so a file nests at most that + FLAG_LEVELS.
FLAG_LEVELS = 3
MAX_FLAG_FILE_BYTES = 8 * 1024**2  # a flag set of thousands of flags is well under 1 MB
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
        if len(part) > 80:  # a key can be any length; the message must stay readable
            part = part[:77] + "..."
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


def _bucket_weight_ok(bucket: list) -> bool:
    weight = bucket[1] if len(bucket) > 1 else 1
    return isinstance(weight, (int, float)) and not isinstance(weight, bool) and weight > 0


def _targeted_names(root: Any, evaluators: dict[str, Any], ref_names: dict[str, set[str]]) -> set[str]:
    """Variant names a JsonLogic expression can return (static scan, see module docstring).

    An explicit stack, not recursion, so no input depth can raise RecursionError; a `$ref` takes the
    names already computed for that evaluator (`ref_names`, see `_evaluator_order`).
    """
    names: set[str] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        for op, args in node.items():
            if op == "$ref" and isinstance(args, str):
                if args in evaluators:
                    names |= ref_names[args]
            elif op == "fractional" and isinstance(args, list):
                for bucket in args:
                    if isinstance(bucket, list) and bucket and isinstance(bucket[0], str):
                        if _bucket_weight_ok(bucket):
                            names.add(bucket[0])
                    else:  # the bucketing expression, e.g. {"var": "targetingKey"} or a "cat"
                        stack.append(bucket)
            elif op == "if" and isinstance(args, list):
                results = [args[i] for i in range(1, len(args), 2)]
                if len(args) % 2 == 1 and len(args) > 1:
                    results.append(args[-1])
                for result in results:
                    if isinstance(result, str):
                        names.add(result)
                    else:
                        stack.append(result)
            elif isinstance(args, (dict, list)):
                # conditions (==, in, sem_ver, ...) never name a variant, but may nest an `if` result
                # one level down; only `if`/`fractional`/`$ref` nodes there produce variant names
                for item in args if isinstance(args, list) else [args]:
                    if isinstance(item, dict) and any(k in item for k in ("if", "fractional", "$ref")):
                        stack.append(item)
    return names


def _always_returns(root: Any, evaluators: dict[str, Any], ref_always: dict[str, set[str] | None]) -> set[str] | None:
    """Variant names `root` can return if it never returns null, else None (unknown or may be null).

    Every leaf of the `if` results must be a sure value, so one walk with an explicit stack gives the
    union of the leaves or stops at the first that may be null.
    """
    names: set[str] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            names.add(node)
            continue
        if not isinstance(node, dict) or len(node) != 1:
            return None
        (op, args), = node.items()
        if op == "$ref" and isinstance(args, str) and args in evaluators:
            found = ref_always[args]
            if found is None:
                return None
            names |= found
        elif op == "fractional" and isinstance(args, list):
            buckets = args[1:] if args and not isinstance(args[0], list) else args
            found = {b[0] for b in buckets
                     if isinstance(b, list) and b and isinstance(b[0], str) and _bucket_weight_ok(b)}
            if not found:
                return None
            names |= found
        elif op == "if" and isinstance(args, list) and len(args) >= 3 and len(args) % 2 == 1:
            stack.extend(args[i] for i in range(1, len(args), 2))
            stack.append(args[-1])
        else:
            return None
    return names


def _rollout_variant(
    state: str, default: str, targeting: dict, evaluators: dict, ref_always: dict, served: frozenset[str],
    unknown: frozenset[str],
) -> str | None:
    if state == "DISABLED" or not targeting:
        return default
    if unknown:  # some evaluations fail (unknown variant): not everyone gets the same thing
        return None
    if len(served) == 1:
        return next(iter(served))
    always = _always_returns(targeting, evaluators, ref_always)
    return next(iter(always)) if always is not None and len(always) == 1 and always <= served else None


def _evaluator_order(evaluators: dict[str, Any], fail) -> list[str]:
    """Evaluator names, each after every evaluator it `$ref`s, so each is scanned once (a chain of
    evaluators that each reference the next twice would otherwise be walked 2**n times).

    A `$ref` cycle can never be resolved by flagd, so it fails the file, naming the cycle.
    """
    uses = {name: sorted(_refs(rule) & evaluators.keys()) for name, rule in evaluators.items()}
    waiting = {name: len(refs) for name, refs in uses.items()}
    used_by: dict[str, list[str]] = {name: [] for name in evaluators}
    for name, refs in uses.items():
        for ref in refs:
            used_by[ref].append(name)
    ready = [name for name, n in waiting.items() if n == 0]
    order: list[str] = []
    while ready:
        name = ready.pop()
        order.append(name)
        for user in used_by[name]:
            waiting[user] -= 1
            if waiting[user] == 0:
                ready.append(user)
    if len(order) < len(evaluators):
        done = set(order)
        node = next(n for n in evaluators if n not in done)
        seen: list[str] = []
        while node not in seen:  # every undone evaluator uses another undone one: walk until it repeats
            seen.append(node)
            node = next(r for r in uses[node] if r not in done)
        cycle = seen[seen.index(node):] + [node]
        raise fail(_path("$evaluators", cycle[0]), "$ref cycle " + " -> ".join(repr(c) for c in cycle))
    return order


def _too_deep(document: Any, limit: int) -> tuple[str, ...] | None:
    """Path of the first container nested deeper than `limit` levels (the top one is level 1), or None.

    Iterative, so it also stops a self-referencing object handed to `parse_flag_document`.
    """
    stack: list[tuple[Any, int, tuple[str, ...]]] = [(document, 1, ())]
    while stack:
        node, level, where = stack.pop()
        if isinstance(node, dict):
            children = ((str(k), v) for k, v in node.items())
        elif isinstance(node, list):
            children = ((f"[{i}]", v) for i, v in enumerate(node))
        else:
            continue
        if level > limit:
            return where
        for part, child in children:
            if isinstance(child, (dict, list)):
                stack.append((child, level + 1, (*where, part)))
    return None


def parse_flag_document(document: Any, source_file: str) -> list[FlagDefinition]:
    """Validate one parsed flagd document and return its flags, in file order."""

    def fail(where: str, why: str) -> FlagFileError:
        return FlagFileError(f"{source_file}: {where}: {why}")

    if not isinstance(document, dict):
        raise fail("$", "the top level must be a JSON object")
    max_depth = settings().limits.max_json_depth
    deep = _too_deep(document, max_depth + FLAG_LEVELS)
    if deep is not None:
        raise fail(_path(*deep) or "$", f"nested deeper than {max_depth} levels below the flag (MVT_MAX_JSON_DEPTH)")
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
    ref_names: dict[str, set[str]] = {}
    ref_always: dict[str, set[str] | None] = {}
    for name in _evaluator_order(evaluators, fail):
        ref_names[name] = _targeted_names(evaluators[name], evaluators, ref_names)
        ref_always[name] = _always_returns(evaluators[name], evaluators, ref_always)
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
        named = _targeted_names(targeting, evaluators, ref_names) if state == "ENABLED" else set()
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
                rollout_variant=_rollout_variant(state, default, targeting, evaluators, ref_always, served, unknown),
            )
        )
    return out


def _check_fractional(root: Any, fail, where: str) -> None:
    """flagd rejects malformed `fractional` buckets at evaluation time; reject them at load instead.

    After an optional bucketing expression (an object), every argument must be `[variant]` or
    `[variant, weight]` with a finite, non-negative numeric weight, and at least one weight must be
    positive. Walks with an explicit stack (no recursion).
    """
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        for op, args in node.items():
            if op != "fractional":
                stack.append(args)
                continue
            if not isinstance(args, list):
                raise fail(where, "fractional: expects a list of [variant, weight] buckets")
            buckets = args[1:] if args and not isinstance(args[0], list) else args
            total = 0.0
            for i, bucket in enumerate(buckets, start=1):
                ok_name = isinstance(bucket, list) and 1 <= len(bucket) <= 2 and isinstance(bucket[0], str)
                weight = (bucket[1] if len(bucket) == 2 else 1) if ok_name else None
                ok_weight = (isinstance(weight, (int, float)) and not isinstance(weight, bool)
                             and math.isfinite(weight) and weight >= 0)
                if not (ok_name and ok_weight):
                    raise fail(where, f"fractional bucket {i} {_short_json(bucket)}: expected [variant, weight >= 0]")
                total += weight
            if total <= 0:
                raise fail(where, "fractional: needs at least one bucket with a positive weight")


def _short_json(value: Any, limit: int = 120) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _refs(root: Any) -> set[str]:
    """Every `{"$ref": name}` below `root` (explicit stack)."""
    found: set[str] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                found.add(node["$ref"])
            stack.extend(node.values())
    return found


def _display_name(path: Path, flags_dir: Path) -> str:
    """`flags/checkout.json`: short, stable across machines (audit output must not depend on cwd)."""
    try:
        return path.relative_to(flags_dir.parent).as_posix()
    except ValueError:
        return path.name


def _refuse_constant(name: str) -> Any:
    raise _NotJson(name)


class _NotJson(Exception):
    pass


_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{},]')  # a string (maybe unterminated) or structure


def _too_deep_in_text(text: str, limit: int) -> tuple[str, ...] | None:
    """`_too_deep` on JSON text that json.loads cannot nest into (it raises RecursionError near 1000
    levels): one linear scan of the tokens, keeping the open containers and their current key or
    index, so the message can still name the flag."""
    frames: list[list] = []  # [is_object, current key or index, expecting a key]
    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            if len(frames) >= limit:
                return tuple(str(f[1]) if f[0] else f"[{f[1]}]" for f in frames)
            frames.append([token == "{", "?" if token == "{" else 0, token == "{"])
        elif token in ("]", "}"):
            if frames:
                frames.pop()
        elif token == ",":
            if frames and frames[-1][0]:
                frames[-1][2] = True
            elif frames:
                frames[-1][1] += 1
        elif frames and frames[-1][0] and frames[-1][2]:
            try:
                frames[-1][1] = json.loads(token)
            except ValueError:
                frames[-1][1] = token.strip('"')
            frames[-1][2] = False
    return None


def load_flag_file(path: str | Path, display_name: str | None = None) -> list[FlagDefinition]:
    """Read one flagd JSON file; invalid JSON fails with its line and column.

    The file is read under the rules of `mvt_pipeline/safe_files.py` (no symlink, a regular file
    inside the data dir or the folder given, at most `MAX_FLAG_FILE_BYTES`, UTF-8); JSON's NaN and
    Infinity, duplicate keys and nesting past `MVT_MAX_JSON_DEPTH` below the flag are refused.
    """
    path = Path(path)
    name = display_name or path.name
    try:
        text = read_text(path, settings().data_dir, MAX_FLAG_FILE_BYTES, name)
    except UnsafeFileError as exc:
        raise FlagFileError(str(exc)) from None
    try:
        document = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise FlagFileError(f"{name}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc
    except _DuplicateKey as exc:
        key = exc.args[0] if len(exc.args[0]) <= 80 else exc.args[0][:77] + "..."
        raise FlagFileError(f"{name}: duplicate key {key!r} in a JSON object") from None
    except _NotJson as exc:
        raise FlagFileError(f"{name}: {exc.args[0]} is not a JSON number (NaN and Infinity are refused)") from None
    except RecursionError:
        max_depth = settings().limits.max_json_depth
        deep = _too_deep_in_text(text, max_depth + FLAG_LEVELS)
        where = f" {_path(*deep)}:" if deep else ""
        raise FlagFileError(f"{name}:{where} nested deeper than {max_depth} levels below the flag "
                            "(MVT_MAX_JSON_DEPTH)") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise FlagFileError(f"{name}: cannot read a value: {exc}") from None
    return parse_flag_document(document, name)


def load_flag_files(flags_dir: str | Path) -> list[FlagDefinition]:
    """Every flag of every `*.json` in `flags_dir`, files in name order; a key defined twice fails.

    A symlinked folder or file, or one resolving outside the data dir, fails like a bad file.
    """
    try:
        flags_dir = check_dir(flags_dir, settings().data_dir, "flags directory")
    except UnsafeFileError as exc:
        raise FlagFileError(str(exc)) from None
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
