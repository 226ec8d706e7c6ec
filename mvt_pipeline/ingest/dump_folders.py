"""What the raw dump tree holds: which days, and a fingerprint per day to notice new or changed files."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

DT_DIR = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})$")


def _day_files(raw_dir: Path) -> dict[str, list[Path]]:
    days: dict[str, list[Path]] = {}
    if not raw_dir.exists():
        return days
    for source_dir in sorted(p for p in raw_dir.iterdir() if p.is_dir()):
        for part_dir in sorted(p for p in source_dir.iterdir() if p.is_dir()):
            match = DT_DIR.match(part_dir.name)
            if match:
                days.setdefault(match.group(1), []).extend(sorted(f for f in part_dir.iterdir() if f.is_file()))
    return days


def dump_days(raw_dir: Path) -> list[str]:
    """Sorted days (YYYY-MM-DD) that have at least one file in some source's `dt=` folder."""
    return sorted(day for day, files in _day_files(raw_dir).items() if files)


def day_fingerprints(raw_dir: Path) -> dict[str, str]:
    """Per day: a hash over (source, file name, size, mtime) of every file in its folders."""
    out = {}
    for day, files in _day_files(raw_dir).items():
        items = []
        for f in files:
            st = f.stat()
            items.append(f"{f.parent.parent.name}/{f.name}:{st.st_size}:{st.st_mtime_ns}")
        out[day] = hashlib.sha256("\n".join(items).encode()).hexdigest()[:16]
    return out
