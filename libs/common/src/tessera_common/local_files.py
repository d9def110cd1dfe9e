"""Blocking file reads behind ``LocalBlobs`` (embedded mode's object store).

obstore's ``LocalStore`` spends 100 to 250 µs on a ``get``, ``get_range`` or ``head`` of a
small object (its async runtime and a spawned blocking task), several times the system calls
themselves; these functions make the calls directly, with the same semantics. A missing
object, or a directory where one is asked for, raises one of ``MISSING`` (the caller maps it
to ``BlobNotFoundError``) or gives ``None``.
"""

from __future__ import annotations

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
