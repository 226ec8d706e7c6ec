"""Where a night's pages live on disk: `<reports>/<as_of>/` for every night (kept), `latest/` for
the newest night, and `<reports>/index.html` linking to every kept night.

Why directories swapped by rename: a reader (a browser, a sync job copying the folder to a share)
must see a whole night, the previous one or the new one, never a mix or a half-written page. A
night is staged in a hidden directory and renamed into place; a re-run of the same night replaces
it the same way. A backfill of an older night never replaces `latest/`. Leftovers of a crashed run
(hidden staging directories) are removed by the next run; the reports asset runs in the warehouse
pool, so only one writer is ever active.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

LATEST = "latest"
ROOT_INDEX = "index.html"
_NIGHT_DIR = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_STAGING = re.compile(r"^\.(\d{4}-\d{2}-\d{2}|latest|index\.html)\.\d+\.(tmp|old)$")


@dataclass(frozen=True)
class PublishedNight:
    night_dir: Path  # <reports>/<as_of>
    pages: list[Path]  # the night's files, index last
    latest: bool  # whether latest/ now shows this night


def night_dir(reports_dir: Path, as_of: dt.date) -> Path:
    return Path(reports_dir) / as_of.isoformat()


def page_path(reports_dir: Path, as_of: dt.date, name: str) -> Path:
    """The kept path of one page of a night (what `analysis.decisions.report_path` records)."""
    return night_dir(reports_dir, as_of) / _plain_name(name)


def kept_nights(reports_dir: Path) -> list[dt.date]:
    """Nights with a published directory, oldest first."""
    root = Path(reports_dir)
    if not root.is_dir():
        return []
    return sorted(dt.date.fromisoformat(p.name) for p in root.iterdir()
                  if _NIGHT_DIR.match(p.name) and p.is_dir() and not p.is_symlink())


def _plain_name(name: str) -> str:
    if Path(name).name != name or not name.endswith(".html") or name.startswith("."):
        raise ValueError(f"report name {name!r} is not a plain .html file name")
    return name


def _refuse_symlink(path: Path) -> None:
    if path.is_symlink():
        raise ValueError(f"{path} is a symlink: refusing to write reports through it")


def _clean_leftovers(root: Path) -> None:
    for p in root.iterdir():
        if _STAGING.match(p.name) and not p.is_symlink():
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def _swap_dir(staged: Path, final: Path) -> None:
    """Put `staged` at `final`; an existing `final` is moved aside first and deleted after."""
    _refuse_symlink(final)
    old = final.with_name(f".{final.name}.{os.getpid()}.old")
    if final.exists():
        os.replace(final, old)
    os.replace(staged, final)
    if old.exists():
        shutil.rmtree(old)


def _write_dir(staging: Path, pages: dict[str, str]) -> list[str]:
    staging.mkdir(parents=True)
    names = sorted(pages, key=lambda n: n == "index.html")  # the index last: it links to the rest
    for name in names:
        (staging / _plain_name(name)).write_text(pages[name], encoding="utf-8")
    return names


def publish_night(reports_dir: Path, as_of: dt.date, pages: dict[str, str],
                  root_index=None) -> PublishedNight:
    """Publish one night's `{file name: html}`; `root_index(nights)` renders `<reports>/index.html`
    from the kept nights (newest first) after the night is in place."""
    root = Path(reports_dir)
    _refuse_symlink(root)
    root.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(root)
    pid = os.getpid()
    final = night_dir(root, as_of)
    staging = root / f".{as_of.isoformat()}.{pid}.tmp"
    try:
        names = _write_dir(staging, pages)
        _swap_dir(staging, final)
        nights = kept_nights(root)
        newest = bool(nights) and as_of >= nights[-1]
        if newest:
            staged_latest = root / f".{LATEST}.{pid}.tmp"
            _write_dir(staged_latest, pages)
            _swap_dir(staged_latest, root / LATEST)
        if root_index is not None:
            tmp = root / f".{ROOT_INDEX}.{pid}.tmp"
            tmp.write_text(root_index(list(reversed(nights))), encoding="utf-8")
            _refuse_symlink(root / ROOT_INDEX)
            os.replace(tmp, root / ROOT_INDEX)
    except BaseException:
        _clean_leftovers(root)
        raise
    return PublishedNight(night_dir=final, pages=[final / n for n in names], latest=newest)
