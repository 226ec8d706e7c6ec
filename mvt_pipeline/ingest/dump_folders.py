"""What the raw dump tree holds: which days, and a fingerprint per day to notice new or changed files.

Nothing here follows a link or raises on a folder name: a source or `dt=` folder that is a symbolic
link, and a `dt=` folder whose name is not a real date (`dt=2026-13-45`, `dt=yesterday`), are skipped
with a logged warning naming the folder, so one odd folder never stops the other days. Entries of a
`dt=` folder are looked at with `lstat` only (a link or FIFO counts as an entry, and ingestion makes
it a quarantine row: `raw_loader.list_partition_files`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import re
import stat
from pathlib import Path

DT_DIR = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})$")

_log = logging.getLogger(__name__)


def _lstat_mode(path: Path) -> int | None:
    try:
        return os.lstat(path).st_mode
    except OSError:
        return None


def partition_of(folder_name: str) -> str | None:
    """The day (YYYY-MM-DD) a `dt=` folder name stands for, or None if it is not a real date."""
    match = DT_DIR.match(folder_name)
    if not match:
        return None
    try:
        return dt.date.fromisoformat(match.group(1)).isoformat()
    except ValueError:
        return None


def is_real_dir(path: Path) -> bool:
    """True for a folder reached without a link; a link to a folder is skipped with a warning."""
    mode = _lstat_mode(path)
    if mode is not None and stat.S_ISLNK(mode):
        if path.is_dir():
            _log.warning("%s: folder is a symbolic link, skipped (links in the dump tree are never followed)", path)
        return False
    return mode is not None and stat.S_ISDIR(mode)


def _real_dirs(parent: Path) -> list[Path]:
    """Sub-folders of `parent`, sorted; links to folders are skipped with a warning."""
    return [p for p in sorted(parent.iterdir()) if is_real_dir(p)]


def _day_files(raw_dir: Path) -> dict[str, list[Path]]:
    days: dict[str, list[Path]] = {}
    if not raw_dir.is_dir():
        return days
    for source_dir in _real_dirs(raw_dir):
        for part_dir in _real_dirs(source_dir):
            if not part_dir.name.startswith("dt="):
                continue
            day = partition_of(part_dir.name)
            if day is None:
                _log.warning("%s: not a dt=YYYY-MM-DD folder with a valid date, skipped", part_dir)
                continue
            entries = []
            for f in sorted(part_dir.iterdir()):
                mode = _lstat_mode(f)
                if mode is not None and not stat.S_ISDIR(mode):
                    entries.append(f)
            days.setdefault(day, []).extend(entries)
    return days


def dump_days(raw_dir: Path) -> list[str]:
    """Sorted days (YYYY-MM-DD) that have at least one file in some source's `dt=` folder."""
    return sorted(day for day, files in _day_files(raw_dir).items() if files)


def day_fingerprints(raw_dir: Path) -> dict[str, str]:
    """Per day: a hash over (source, file name, size, mtime) of every entry in its folders (`lstat`:
    links are not followed)."""
    out = {}
    for day, files in _day_files(raw_dir).items():
        items = []
        for f in files:
            try:
                st = os.lstat(f)
            except OSError:
                continue
            items.append(f"{f.parent.parent.name}/{f.name}:{st.st_size}:{st.st_mtime_ns}")
        out[day] = hashlib.sha256("\n".join(items).encode()).hexdigest()[:16]
    return out
