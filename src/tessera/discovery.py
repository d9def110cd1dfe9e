"""Finding the DICOM files to upload under a set of paths.

A file is uploaded when it is a DICOM PS3.10 file: a 128-byte preamble, then ``DICM``
(PS3.10 §7.1). Everything else is skipped and counted, including files that pydicom could
read without a preamble (bare data sets, old ACR-NEMA files): STOW-RS stores PS3.10 files
(``application/dicom``, PS3.18 §8.7.3.5.1), so such a file would have to be rewritten — its
bytes would change — and guessing that arbitrary bytes are a bare data set (pydicom's
``force=True``) also "reads" files that are not DICOM at all. Whether the data set inside a
file with a preamble is well-formed is the server's to judge: a truncated file is sent and
comes back as a failure with the server's reason.

``DICOMDIR`` files (the Media Storage Directory of PS3.10 §8) carry a preamble but describe
a medium, they are not instances: they are skipped too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

PREAMBLE_LENGTH = 128
DICM_PREFIX = b"DICM"
HEAD_LENGTH = PREAMBLE_LENGTH + len(DICM_PREFIX)

NOT_DICOM = "not DICOM (no DICM prefix after a 128-byte preamble)"
TOO_SHORT = "not DICOM (shorter than a PS3.10 preamble)"
DICOMDIR = "DICOMDIR (a media directory, not an instance)"
UNREADABLE = "unreadable"


@dataclass(frozen=True)
class Candidate:
    """A file to upload."""

    path: Path
    size: int


@dataclass(frozen=True)
class Skipped:
    path: Path
    reason: str


@dataclass
class Discovery:
    candidates: list[Candidate] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(c.size for c in self.candidates)


def classify(name: str, head: bytes) -> str | None:
    """None when a file named ``name`` that starts with ``head`` (its first
    :data:`HEAD_LENGTH` bytes, or all of it when shorter) is to be uploaded, else why not."""
    if len(head) < HEAD_LENGTH:
        return TOO_SHORT
    if head[PREAMBLE_LENGTH:HEAD_LENGTH] != DICM_PREFIX:
        return NOT_DICOM
    if name.upper() == "DICOMDIR":
        return DICOMDIR
    return None


def walk(paths: Iterable[Path]) -> Iterator[Path]:
    """Every file under ``paths`` (files given directly included), each once, directories in
    sorted order. Symbolic links to directories are not followed (no cycles); links to files
    are."""
    seen: set[Path] = set()
    for root in paths:
        if root.is_dir():
            for directory, subdirectories, names in os.walk(root):
                subdirectories.sort()
                for name in sorted(names):
                    path = Path(directory, name)
                    if path not in seen and path.is_file():
                        seen.add(path)
                        yield path
        elif root not in seen:
            seen.add(root)
            yield root


def discover(paths: Iterable[Path]) -> Discovery:
    """Sort the files under ``paths`` into candidates and skipped files (reads 132 bytes of
    each file)."""
    found = Discovery()
    for path in walk(paths):
        try:
            with path.open("rb") as file:
                head = file.read(HEAD_LENGTH)
                size = os.fstat(file.fileno()).st_size
        except OSError as error:
            found.skipped.append(Skipped(path, f"{UNREADABLE} ({error.strerror or error})"))
            continue
        reason = classify(path.name, head)
        if reason is None:
            found.candidates.append(Candidate(path, size))
        else:
            found.skipped.append(Skipped(path, reason))
    return found


def read_sop_instance_uid(path: Path) -> str | None:
    """The Media Storage SOP Instance UID (0002,0003) of a PS3.10 file's meta information, or
    None when it cannot be read."""
    from pydicom.errors import InvalidDicomError
    from pydicom.filereader import read_file_meta_info

    try:
        meta = read_file_meta_info(path)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError):
        return None
    value = meta.get("MediaStorageSOPInstanceUID")
    text = str(value).strip("\0 ") if value is not None else ""
    return text or None
