"""Read configuration files (registry YAML, flag files) without following links out of the data dir.

Whoever can write `MVT_DATA_DIR` must not be able to make the night read another file (a symlink to
a secret, to `/dev/zero`, to a FIFO that blocks forever) or a file so large that parsing it hangs.
The rule, for a path handed to `check_dir` / `read_text`:

- below `data_dir` (how the pipeline calls it: `settings().registry_dir`, `.flags_dir`), no component
  between the data dir and the file may be a symlink or `..`, and the file must resolve inside the data
  dir. Components above the data dir, and the data dir itself, are the operator's choice and may be links;
- outside `data_dir` (an explicit path, e.g. a test or `mvt lint` on the repo's sample registry), the
  folder itself and the file must not be symlinks (the file then resolves inside that folder);
- the file must be a regular file (checked on the opened descriptor, so no FIFO or device is read),
  at most `max_bytes` long, and valid UTF-8; a decoding error names the line and byte offset.

Messages name the path as given and the reason, never a link's target. Callers wrap `UnsafeFileError`
into their own error class (`RegistryError`, `FlagFileError`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path


class UnsafeFileError(ValueError):
    """A file or folder was refused; the message names it (as given) and the reason."""


def _absolute(path: Path) -> Path:
    """Absolute without resolving links or `..` (both must stay visible to the checks)."""
    return path if path.is_absolute() else Path.cwd() / path


def _parts_below(path: Path, data_dir: Path) -> list[Path] | None:
    """The prefixes of `path` strictly below `data_dir` (None if `path` is not below it)."""
    base = os.path.realpath(data_dir)
    parts = path.parts
    current = Path(parts[0])
    for i, part in enumerate(parts[1:], start=1):
        current = current / part
        if part != ".." and os.path.realpath(current) == base:
            below, prefix = [], current
            for rest in parts[i + 1:]:
                prefix = prefix / rest
                below.append(prefix)
            return below
    return None


def _refuse_links(path: Path, data_dir: Path, name: str, *, is_file: bool) -> None:
    below = _parts_below(path, data_dir)
    if below is None:  # explicit path outside the data dir: the folder and the file themselves
        checked = [path.parent, path] if is_file else [path]
    else:
        checked = below
    for part in checked:
        if part.name == "..":
            raise UnsafeFileError(f"{name}: '..' is not allowed in a path below the data directory")
        if os.path.islink(part):
            what = "" if part == path else f" (its folder {part.name!r})"
            raise UnsafeFileError(f"{name}: is a symbolic link{what}; links are refused")
    if below:
        base = os.path.realpath(data_dir)
        if os.path.commonpath([base, os.path.realpath(path)]) != base:
            raise UnsafeFileError(f"{name}: resolves outside the data directory")


def check_dir(directory: str | Path, data_dir: str | Path, what: str = "directory") -> Path:
    """`directory` as an absolute path, if it is a real folder reached without links (module doc)."""
    path = _absolute(Path(directory))
    name = str(directory)
    _refuse_links(path, Path(data_dir), name, is_file=False)
    try:
        is_dir = stat.S_ISDIR(os.stat(path).st_mode)
    except FileNotFoundError:
        is_dir = False
    except OSError as exc:
        raise UnsafeFileError(f"{name}: cannot open the {what}: {exc.strerror}") from None
    if not is_dir:
        raise UnsafeFileError(f"{name}: {what} not found")
    return path


class NotRegularFile(OSError):
    """The path opened is a FIFO, device, socket or folder, not a regular file."""


def open_regular_fd(path: str | Path) -> int:
    """A read-only descriptor on `path`, which must be a regular file whose last component is not a
    link. O_NOFOLLOW refuses a link (ELOOP), O_NONBLOCK keeps a FIFO from blocking the open, and the
    kind is checked on the descriptor itself, so nothing swapped in after an earlier check is read.
    Raises OSError (`NotRegularFile` for a special file)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFile(errno.EINVAL, "not a regular file", str(path))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def pinned_path(path: str | Path) -> Iterator[str]:
    """A path to hand a reader that only takes paths (polars, DuckDB) for the regular file `path`,
    opened as `open_regular_fd` opens it: `/proc/self/fd/N` of that descriptor where the system has
    it, so the reader gets the very file that was checked even if the entry is swapped for a link
    after the check. The name carries no suffix: say the compression explicitly."""
    fd = open_regular_fd(path)
    try:
        pinned = f"/proc/self/fd/{fd}"
        yield pinned if os.path.exists(pinned) else str(path)
    finally:
        os.close(fd)


def _open_regular(path: Path, name: str) -> int:
    try:
        return open_regular_fd(path)
    except FileNotFoundError:
        raise UnsafeFileError(f"{name}: file not found") from None
    except NotRegularFile:
        raise UnsafeFileError(f"{name}: not a regular file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a link created after the checks
            raise UnsafeFileError(f"{name}: is a symbolic link; links are refused") from None
        raise UnsafeFileError(f"{name}: cannot open: {exc.strerror}") from None


def read_bytes(path: str | Path, data_dir: str | Path, max_bytes: int, name: str | None = None) -> bytes:
    """The file's bytes, at most `max_bytes`, if it passes the rules of the module doc."""
    given = Path(path)
    name = name or str(path)
    absolute = _absolute(given)
    _refuse_links(absolute, Path(data_dir), name, is_file=True)
    fd = _open_regular(absolute, name)
    try:
        if os.fstat(fd).st_size > max_bytes:
            raise UnsafeFileError(f"{name}: larger than the limit of {max_bytes:,} bytes")
        chunks, total = [], 0
        while total <= max_bytes:  # the size may change after fstat: never read past the cap
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise UnsafeFileError(f"{name}: cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)
    if total > max_bytes:
        raise UnsafeFileError(f"{name}: larger than the limit of {max_bytes:,} bytes")
    return b"".join(chunks)


def decode_utf8(data: bytes, name: str) -> str:
    """UTF-8 text; invalid bytes fail with the line and byte offset, so the file can be fixed."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UnsafeFileError(
            f"{name}: not UTF-8 at line {line}, byte offset {exc.start} ({exc.reason}, byte 0x{data[exc.start]:02x})"
        ) from None


def read_text(path: str | Path, data_dir: str | Path, max_bytes: int, name: str | None = None) -> str:
    """`read_bytes` decoded as UTF-8 (a leading byte-order mark is dropped)."""
    name = name or str(path)
    text = decode_utf8(read_bytes(path, data_dir, max_bytes, name), name)
    return text[1:] if text.startswith("\ufeff") else text
