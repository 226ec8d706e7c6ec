"""The file manifest (`raw.ingest_log`): what was ingested for a partition, so an unchanged partition
is a no-op and any change (a file added, removed, rewritten, or new validation rules) re-ingests it.

A file is identified by (path, size, sha256). Size alone misses in-place rewrites and mtime changes
on a mere copy, so the content hash decides; hashing costs about 1 s per GB, small next to parsing.
The rules fingerprint covers the registry (an experiment added makes `unknown_experiment` lines
valid) and the validation rules version, so changing either re-ingests instead of silently skipping.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import duckdb

from ..registry import Registry
from ..safe_files import open_regular_fd

# Bump when validation rules change meaning, so existing partitions are re-ingested once.
RULES_VERSION = "2"


@dataclass(frozen=True)
class FileFingerprint:
    source: str
    path: Path
    size_bytes: int
    sha256: str


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with os.fdopen(open_regular_fd(path), "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fingerprint(source: str, path: Path) -> FileFingerprint:
    """A regular file by its size and content; any other entry (link, FIFO, device: listed so that
    ingestion quarantines it) by its `lstat` size and a hash of its kind and link text, never opened
    or followed: a FIFO would block, a link could point anywhere."""
    st = os.lstat(path)
    if stat.S_ISREG(st.st_mode):
        try:
            return FileFingerprint(source, path, st.st_size, sha256_of(path))
        except OSError:  # swapped for a link or FIFO since the lstat: ingestion quarantines what it finds
            st = os.lstat(path)
    target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
    text = f"{stat.filemode(st.st_mode)} {target}".encode("utf-8", "surrogateescape")
    return FileFingerprint(source, path, st.st_size, hashlib.sha256(text).hexdigest())


def fingerprint_files(files: list[tuple[str, Path]]) -> list[FileFingerprint]:
    return [_fingerprint(source, path) for source, path in files]


def registry_levels(registry: Registry) -> list[tuple[str, str, str]]:
    return sorted((e.id, f.name, level) for e in registry.experiments for f in e.factors for level in f.levels)


MAX_CELL_TEXTS = 4096


def registry_cell_texts(registry: Registry) -> list[str]:
    """`experiment<US>assignment JSON` for every full cell (factors in registry order) and every
    single factor's level, compact: the forms SDKs send (whole cell, or one exposure per factor), so
    checking most exposures is one list lookup. Only a shortcut (any other spelling of a valid
    assignment is checked entry by entry), so it is skipped for huge designs."""
    out: list[str] = []

    def add(experiment: str, assignment: dict) -> None:
        out.append(experiment + "\x1f" + json.dumps(assignment, separators=(",", ":"), ensure_ascii=False))

    for e in registry.experiments:
        names = [f.name for f in e.factors]
        for f in e.factors:
            for level in f.levels:
                add(e.id, {f.name: level})
        for levels in itertools.product(*(f.levels for f in e.factors)):
            add(e.id, dict(zip(names, levels)))
            if len(out) > MAX_CELL_TEXTS:
                return []
    return sorted(set(out))


def rules_fingerprint(registry: Registry) -> str:
    """The registry's part in what a night accepts: levels, and (when set) the source formats and
    the SDK key mapping, so changing any of them re-ingests instead of silently skipping."""
    from .source_formats import sdk_key_rows

    text = RULES_VERSION + "\n" + "\n".join("|".join(x) for x in registry_levels(registry))
    formats = [s.model_dump_json() for s in registry.sources]
    mapped = bool(registry.sources) or any(f.sdk_key or f.variations for e in registry.experiments for f in e.factors)
    keys = ["|".join("" if x is None else x for x in r) for r in sdk_key_rows(registry)] if mapped else []
    if formats or keys:
        text += "\nsources\n" + "\n".join(formats) + "\nsdk keys\n" + "\n".join(keys)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def partition_unchanged(conn: duckdb.DuckDBPyConnection, partition: str, current: list[FileFingerprint],
                        rules: str) -> bool:
    """True when the log holds exactly these files with the same size, hash and rules fingerprint."""
    logged = conn.execute(
        "select path, size_bytes, sha256, rules_fingerprint from raw.ingest_log where dt = ?::date", [partition]
    ).fetchall()
    if not logged or len(logged) != len(current):
        return False
    now = {(str(f.path), f.size_bytes, f.sha256, rules) for f in current}
    return now == {tuple(row) for row in logged}
