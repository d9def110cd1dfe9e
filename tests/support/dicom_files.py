"""Test data: the shared collection beside the repository and pydicom's bundled files."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import data_store
import pydicom
import pydicom.data

from tessera_common.uid import is_valid_uid

SHARED_TESTDATA = Path(__file__).resolve().parents[2].parent / "shared" / "testdata"


@dataclass(frozen=True)
class DicomFile:
    path: Path
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def _describe(path: Path) -> DicomFile | None:
    with path.open("rb") as fp:
        head = fp.read(132)
    if len(head) < 132 or head[128:132] != b"DICM":
        return None
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        uids = (
            str(ds.StudyInstanceUID),
            str(ds.SeriesInstanceUID),
            str(ds.SOPInstanceUID),
            str(ds.SOPClassUID),
            str(ds.file_meta.TransferSyntaxUID),
        )
    except Exception:
        return None
    if not all(is_valid_uid(u) for u in uids):
        return None
    return DicomFile(path, *uids)


@cache
def shared_files() -> tuple[DicomFile, ...]:
    """Every file listed in shared/testdata/index.json."""
    index = json.loads((SHARED_TESTDATA / "index.json").read_text())
    found = []
    for entry in index:
        described = _describe(SHARED_TESTDATA / entry["file"])
        if described is not None:
            found.append(described)
    return tuple(found)


def pydicom_paths() -> list[Path]:
    """Every file pydicom and pydicom-data bundle, read from their folders: pydicom's lookup
    helpers try to download files that pydicom-data does not carry, and nothing may be
    downloaded at test time."""
    folders = [
        Path(pydicom.data.__file__).parent / "test_files",
        Path(pydicom.data.__file__).parent / "charset_files",
        Path(data_store.__file__).parent / "data",
    ]
    return sorted(p for folder in folders for p in folder.rglob("*") if p.is_file())


@cache
def pydicom_files() -> tuple[DicomFile, ...]:
    """pydicom / pydicom-data files that are storable PS3.10 files with valid UIDs."""
    found = []
    for path in pydicom_paths():
        described = _describe(path)
        if described is not None:
            found.append(described)
    return tuple(found)


#: pydicom's deliberately broken files: a readable header, but cut short.
TRUNCATED = frozenset(
    {"MR_truncated.dcm", "emri_small_jpeg_2k_lossless_too_short.dcm", "rtplan_truncated.dcm"}
)


def all_files() -> tuple[DicomFile, ...]:
    """shared/testdata first, then pydicom's files."""
    return shared_files() + pydicom_files()


def storable_files() -> tuple[DicomFile, ...]:
    """Every test file a correct archive must store (the truncated ones left out)."""
    return tuple(f for f in all_files() if f.path.name not in TRUNCATED)


def split_by_sop(files: tuple[DicomFile, ...]) -> tuple[list[DicomFile], list[DicomFile]]:
    """(first file of each SOP Instance UID, the later files that re-use a UID)."""
    seen: set[str] = set()
    first, later = [], []
    for f in files:
        (later if f.sop_uid in seen else first).append(f)
        seen.add(f.sop_uid)
    return first, later
