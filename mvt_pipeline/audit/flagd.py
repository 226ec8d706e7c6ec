"""Parse feature-flag definitions in the OpenFeature flagd JSON format (and a simple CSV export).

The stale-flag audit needs to know, for every flag, which variants it can still *serve*: a flag that
serves one variant is rolled out; one that still serves several is an experiment (or leftover) in
progress. flagd decides through JsonLogic `targeting`, so this module reads that logic statically:

- `fractional` buckets `["variant", weight]` with weight > 0 (a bucket without weight counts as 1,
  as in flagd) can be served;
- string results of `if` branches (positions 1, 3, ... and the trailing else) are variant names;
- `{"$ref": "name"}` is resolved against the file's top-level `$evaluators`;
- the defaultVariant is always counted; a DISABLED flag serves only its default.

Variant names found in targeting that are not among `variants` are kept apart
(`unknown_targeted_variants`) instead of failing the load, so the audit can report them as
`invalid_targeting`. Everything else that flagd itself would reject raises `FlagFileError` with the
file, the JSON path and the reason, so the person fixing it does not have to hunt.
"""

from __future__ import annotations

import csv
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
        for ref in _refs(targeting):
            if ref not in evaluators:
                raise fail(where("targeting"), f"$ref {ref!r} is not defined in $evaluators")
        named = _targeted_names(targeting, evaluators) if state == "ENABLED" else set()
        out.append(
            FlagDefinition(
                key=key,
                state=state,
                variants=dict(variants),
                default_variant=default,
                targeting=targeting,
                source_file=source_file,
                metadata={**set_metadata, **metadata},
                served_variants=frozenset({default} | (named & set(variants))),
                unknown_targeted_variants=frozenset(named - set(variants)),
            )
        )
    return out


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


CSV_COLUMNS = ("key", "state", "variants", "default_variant", "last_modified", "owner")


def load_flag_csv(path: str | Path) -> list[FlagDefinition]:
    """Read the simple CSV export (key,state,variants,default_variant,last_modified,owner).

    The export carries no targeting, so what an ENABLED flag serves is unknown; the audit assumes the
    worst (every listed variant can be served), because calling a live experiment "rolled out" is
    the costlier mistake. `owner` and `last_modified` go to `metadata`.
    """
    path = Path(path)
    name = path.name
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise FlagFileError(f"{name}: header: missing column(s) {', '.join(missing)}")
            rows = list(reader)
    except OSError as exc:
        raise FlagFileError(f"{name}: cannot read: {exc}") from exc
    flags: list[FlagDefinition] = []
    seen: set[str] = set()
    for i, row in enumerate(rows, start=2):  # line 1 is the header
        key = (row["key"] or "").strip()
        where = f"{name}: line {i}"
        if not key:
            raise FlagFileError(f"{where}: key: empty")
        if key in seen:
            raise FlagFileError(f"{where}: key: {key!r} defined twice")
        seen.add(key)
        state = (row["state"] or "").strip().upper()
        if state not in FLAG_STATES:
            raise FlagFileError(f"{where} ({key}): state: {row['state']!r} is not one of {', '.join(FLAG_STATES)}")
        names = [v.strip() for v in (row["variants"] or "").split(";") if v.strip()]
        if not names:
            raise FlagFileError(f"{where} ({key}): variants: empty (expected a;b;c)")
        default = (row["default_variant"] or "").strip()
        if default not in names:
            raise FlagFileError(
                f"{where} ({key}): default_variant: {default!r} is not a variant (known: {', '.join(names)})"
            )
        metadata = {k: row[k].strip() for k in ("owner", "last_modified") if row.get(k) and row[k].strip()}
        served = frozenset(names) if state == "ENABLED" else frozenset({default})
        flags.append(
            FlagDefinition(
                key=key, state=state, variants={n: n for n in names}, default_variant=default, targeting={},
                source_file=name, metadata=metadata, served_variants=served,
            )
        )
    return flags
