"""Load the YAML registry; a bad file fails naming the file, the path inside it and the reason.

The registry is written by people and read every night, so the loader refuses what YAML allows but a
registry never needs, each of which has hung or silently changed a night (issue #19):

- aliases (`*a`) that would add more than `MAX_ALIAS_EXPANSION` values once expanded (a 3 KB alias
  bomb expands into gigabytes; it now fails at its first alias past the bound), an alias inside the
  value it names, and merge keys (`<<`, whose "explicit key wins" hides duplicates);
- a mapping key given twice (plain YAML keeps the last one without a word);
- nesting deeper than `settings().limits.max_json_depth` (the composer recurses per level);
- a file larger than `MAX_REGISTRY_FILE_BYTES` (the pure-Python parser reads ~250 KB/s), not UTF-8
  (the error gives the line and byte offset), a symlink, or not a regular file
  (`mvt_pipeline/safe_files.py` has the rule for folders inside and outside the data dir).

Every failure is a `RegistryError` whose message names the file, the place (line, column and the
path inside the document, e.g. `experiments[2].factors[0].weights`) and the reason.
"""

from __future__ import annotations

import os
import re
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from ..config import settings
from ..safe_files import UnsafeFileError, check_dir, read_text
from .models import Experiment, Metric, Registry, Source

# A registry of a thousand experiments is ~300 KB; past this the parser alone takes seconds.
MAX_REGISTRY_FILE_BYTES = 1024**2
# Values (scalars and collections) that aliases may add, counted as if expanded. Tools such as
# yaml.safe_dump write an anchor for every object they meet twice, so aliases are bounded, not banned.
MAX_ALIAS_EXPANSION = 100_000
_MERGE_TAG = "tag:yaml.org,2002:merge"
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")


class RegistryError(ValueError):
    """The registry cannot be used; the message says which file, where, and why."""


class _Refused(Exception):
    """Raised inside the YAML loader; `read_registry_yaml` turns it into a RegistryError."""

    def __init__(self, mark, where: str, reason: str):
        super().__init__(reason)
        self.mark, self.where, self.reason = mark, where, reason


def _key_text(node) -> str:
    if not isinstance(node, ScalarNode):
        return "?"
    text = node.value if len(node.value) <= 64 else node.value[:61] + "..."
    return text if _PLAIN_KEY.match(text) else repr(text)


class _RegistryYamlLoader(yaml.SafeLoader):
    """SafeLoader with bounded aliases and depth, and without merge keys or duplicate keys.

    Each node gets `mvt_path` (its place, for errors), `mvt_size` (values in it, aliases expanded)
    and `mvt_height` (its nesting), so an alias is charged what it would cost if written out.
    """

    def __init__(self, stream: str, max_depth: int):
        super().__init__(stream)
        self._max_depth = max_depth
        self._depth = 0
        self._expanded = 0  # values added by aliases
        self._where = ""

    def compose_node(self, parent, index):
        where = self._where
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            self._check_alias(event, where)
            return super().compose_node(parent, index)  # the anchored node itself, shared
        nests = isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent))
        if nests and self._depth >= self._max_depth:
            raise _Refused(event.start_mark, where,
                           f"nested deeper than {self._max_depth} levels (MVT_MAX_JSON_DEPTH)")
        self._depth += nests
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= nests
            self._where = where
        node.mvt_path = where
        if isinstance(node, ScalarNode):
            node.mvt_size, node.mvt_height = 1, 0
        else:
            children = [c for pair in node.value for c in pair] if isinstance(node, MappingNode) else node.value
            node.mvt_size = 1 + sum(c.mvt_size for c in children)
            node.mvt_height = 1 + max((c.mvt_height for c in children), default=0)
        return node

    def _check_alias(self, event, where: str) -> None:
        """An alias costs the size of what it names: count it, so a bomb fails at its first levels."""
        target = self.anchors.get(event.anchor)
        if target is None:
            return  # Composer raises "found undefined alias"
        if not hasattr(target, "mvt_size"):
            raise _Refused(event.start_mark, where,
                           f"aliases are not allowed inside the value they name (*{event.anchor})")
        if self._depth + target.mvt_height > self._max_depth:
            raise _Refused(event.start_mark, where, f"nested deeper than {self._max_depth} levels "
                           f"(MVT_MAX_JSON_DEPTH) once *{event.anchor} is expanded")
        self._expanded += target.mvt_size
        if self._expanded > MAX_ALIAS_EXPANSION:
            raise _Refused(event.start_mark, where, f"aliases are not allowed to add more than {MAX_ALIAS_EXPANSION:,} "
                           f"values to the document (*{event.anchor} brings it to {self._expanded:,})")

    def compose_sequence_node(self, anchor):
        """Composer.compose_sequence_node, telling each item its path."""
        where = self._where
        start = self.get_event()
        tag = start.tag
        if tag is None or tag == "!":
            tag = self.resolve(SequenceNode, None, start.implicit)
        node = SequenceNode(tag, [], start.start_mark, None, flow_style=start.flow_style)
        if anchor is not None:
            self.anchors[anchor] = node
        index = 0
        while not self.check_event(yaml.SequenceEndEvent):
            self._where = f"{where}[{index}]"
            node.value.append(self.compose_node(node, index))
            index += 1
        node.end_mark = self.get_event().end_mark
        return node

    def compose_mapping_node(self, anchor):
        """Composer.compose_mapping_node, telling each value its path and refusing merge keys."""
        where = self._where
        start = self.get_event()
        tag = start.tag
        if tag is None or tag == "!":
            tag = self.resolve(MappingNode, None, start.implicit)
        node = MappingNode(tag, [], start.start_mark, None, flow_style=start.flow_style)
        if anchor is not None:
            self.anchors[anchor] = node
        while not self.check_event(yaml.MappingEndEvent):
            self._where = where
            key = self.compose_node(node, None)
            if key.tag == _MERGE_TAG:
                raise _Refused(key.start_mark, where, "merge keys (<<) are not allowed; write the keys out")
            self._where = f"{where}.{_key_text(key)}" if where else _key_text(key)
            node.value.append((key, self.compose_node(node, key)))
        node.end_mark = self.get_event().end_mark
        return node

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, OverflowError) as exc:  # e.g. 2026-02-30, a 5000-digit integer
            raise _Refused(node.start_mark, getattr(node, "mvt_path", ""), f"cannot read this value: {exc}") from None

    def construct_mapping(self, node, deep=False):
        """BaseConstructor.construct_mapping, refusing a key given twice (YAML keeps the last)."""
        if not isinstance(node, MappingNode):
            raise yaml.constructor.ConstructorError(
                None, None, f"expected a mapping node, but found {node.id}", node.start_mark)
        self.flatten_mapping(node)  # merge keys are refused when composing; this only handles `=` keys
        mapping: dict[Any, Any] = {}
        first_line: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                raise _Refused(key_node.start_mark, getattr(node, "mvt_path", ""),
                               "a mapping key must be a plain value")
            if key in mapping:
                raise _Refused(key_node.start_mark, getattr(node, "mvt_path", ""),
                               f"duplicate key {_key_text(key_node)} (first at line {first_line[key]})")
            first_line[key] = key_node.start_mark.line + 1
            mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping


def _parse_yaml(text: str, name: str) -> Any:
    loader = None
    try:
        loader = _RegistryYamlLoader(text, settings().limits.max_json_depth)  # checks the characters
        return loader.get_single_data()
    except _Refused as exc:
        where = f" {exc.where}:" if exc.where else ""
        raise RegistryError(
            f"{name}: line {exc.mark.line + 1}, column {exc.mark.column + 1}:{where} {exc.reason}") from None
    except yaml.YAMLError as exc:
        raise RegistryError(f"{name}: not valid YAML: {exc}") from None
    except RecursionError:  # only with a very high MVT_MAX_JSON_DEPTH on a deep stack
        raise RegistryError(f"{name}: nested too deeply to read") from None
    except (ValueError, TypeError, OverflowError) as exc:  # a constructor failing outside construct_object
        raise RegistryError(f"{name}: cannot read: {exc}") from None
    finally:
        if loader is not None:
            loader.dispose()


def read_registry_yaml(path: str | Path, name: str | None = None) -> dict:
    """One registry file as a mapping, read under the rules of the module doc.

    `name` is how messages call the file (default: the path as given). Public so the lint reads the
    files exactly as the loader does.
    """
    name = name or str(path)
    try:
        text = read_text(path, settings().data_dir, MAX_REGISTRY_FILE_BYTES, name)
    except UnsafeFileError as exc:
        raise RegistryError(str(exc)) from None
    data = _parse_yaml(text, name)
    if not isinstance(data, dict):
        raise RegistryError(f"{name}: expected a mapping at the top level")
    return data


def _list(data: dict, key: str, path: Path) -> list:
    items = data.get(key)
    if items is None:
        return []
    if not isinstance(items, list):
        raise RegistryError(f"{path}: {key}: expected a list, got {type(items).__name__}")
    return items


def _loc(part: Any) -> str:
    text = str(part)
    return text if len(text) <= 64 else text[:61] + "..."


def _format(path: Path, key: str, exc: ValidationError) -> str:
    lines = [f"{path}: invalid registry"]
    for err in exc.errors():
        loc = ".".join([key, *(_loc(p) for p in err["loc"])])
        lines.append(f"  at {loc}: {err['msg']}")
    return "\n".join(lines)


def _validate_each(path: Path, key: str, ident: str, raws: list, model):
    """Validate each entry on its own, so the error names the entry's index and id."""
    out = []
    for i, raw in enumerate(raws):
        try:
            out.append(model.model_validate(raw))
        except ValidationError as exc:
            name = raw.get(ident) if isinstance(raw, dict) else None
            # only a string is shown: formatting anything else could expand a huge shared structure
            name = _loc(name) if isinstance(name, str) else "?"
            raise RegistryError(_format(path, f"{key}[{i}] ({ident}={name})", exc)) from exc
    return out


def load_registry(registry_dir: str | Path) -> Registry:
    """`registry_dir/experiments.yaml` and `metrics.yaml` as a validated Registry, or RegistryError.

    The folder may be `settings().registry_dir` (then nothing below the data dir may be a symlink) or
    any explicit folder (then the folder and its two files must not be symlinks): see safe_files.
    """
    try:
        registry_dir = check_dir(registry_dir, settings().data_dir, "registry directory")
    except UnsafeFileError as exc:
        raise RegistryError(str(exc)) from None
    exp_path = registry_dir / "experiments.yaml"
    met_path = registry_dir / "metrics.yaml"
    exp_yaml = read_registry_yaml(exp_path)
    raw_exps = _list(exp_yaml, "experiments", exp_path)
    raw_mets = _list(read_registry_yaml(met_path), "metrics", met_path)
    experiments = _validate_each(exp_path, "experiments", "id", raw_exps, Experiment)
    metrics = _validate_each(met_path, "metrics", "name", raw_mets, Metric)
    src_path = registry_dir / "sources.yaml"  # optional: folders not listed hold the contract
    sources = []
    if os.path.lexists(src_path):
        sources = _validate_each(src_path, "sources", "name", _list(read_registry_yaml(src_path), "sources", src_path),
                                 Source)
    try:
        return Registry(experiments=experiments, metrics=metrics, owners=exp_yaml.get("owners") or {},
                        sources=sources)
    except ValidationError as exc:
        raise RegistryError(_format(exp_path, "registry", exc)) from exc
