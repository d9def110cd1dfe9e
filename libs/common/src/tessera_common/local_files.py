"""Blocking file calls behind ``LocalBlobs`` (embedded mode's object store).

obstore's ``LocalStore`` spends 100 to 250 µs on a ``get``, ``get_range``, ``head``, ``put`` or
``rename`` of a small object (its async runtime and a spawned blocking task), several times
the system calls themselves; these functions make the calls directly, with the same
semantics. A missing object, or a directory where one is asked for, raises one of ``MISSING``
(the caller maps it to ``BlobNotFoundError``) or gives ``None``. Writes go through a staging
file beside the object, named ``{name}#{digits}`` as obstore names its own: listings skip such
names, so a write cut short never shows as an object.
"""

from __future__ import annotations

import itertools
import os
import stat as stat_module
from datetime import UTC, datetime
from pathlib import Path

#: Errors that mean "no object at this key" (a directory, or a file where a directory is).
MISSING = (FileNotFoundError, IsADirectoryError, NotADirectoryError)


def read_range(path: Path, start: int, end: int) -> bytes:
    """Bytes ``start``..``end`` of the file (fewer at its end)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, max(end - start, 0), start)
    finally:
        os.close(fd)


def read_all(path: Path) -> bytes:
    with open(path, "rb", buffering=0) as fp:
        return fp.read()


def stat(path: Path) -> tuple[int, datetime] | None:
    """(size, modification time) of the file, or None when there is none."""
    try:
        info = path.stat()
    except MISSING:
        return None
    if not stat_module.S_ISREG(info.st_mode):
        return None
    return info.st_size, datetime.fromtimestamp(info.st_mtime, UTC)


_staging_numbers = itertools.count()


def write(path: Path, data: bytes) -> None:
    """Put ``data`` at ``path`` whole, or leave what was there (staging file, then rename)."""
    staging = path.with_name(f"{path.name}#{os.getpid()}{next(_staging_numbers):06d}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        fd = os.open(staging, flags, 0o644)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(staging, flags, 0o644)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        staging.rename(path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


def rename(source: Path, target: Path) -> None:
    """Move the file at ``source`` to ``target`` (replacing it), creating its directories."""
    try:
        source.rename(target)
    except FileNotFoundError:
        if not source.exists():
            raise
        target.parent.mkdir(parents=True, exist_ok=True)
        source.rename(target)


def remove(path: Path) -> None:
    """Delete the file at ``path``; nothing there (or a directory) is not an error."""
    try:
        path.unlink()
    except (*MISSING, PermissionError):
        # unlink of a directory raises IsADirectoryError on Linux, PermissionError elsewhere.
        if path.is_file():
            raise
