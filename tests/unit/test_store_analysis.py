"""STOW-RS ingest analysis (PS3.18 §10.5, Annex I): real files, hostile files, DICOM JSON.

Reference tables: ``shared/testdata/index.json`` (UIDs and frame counts per file), every PS3.10
file pydicom and pydicom-data ship (with the files expected to be refused and why), hand-made
hostile uploads, and single elements with their expected JSON (PS3.18 Annex F).
"""

from __future__ import annotations

import io
import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import data_store
import pydicom
import pydicom.data
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import generate_fragments, generate_frames
from pydicom.filereader import read_dataset

from tessera_common.errors import FailureReason, WarningReason
from tessera_store import analysis
from tessera_store.analysis import InstanceAnalysis, InstanceRejectedError, analyze_instance
from tessera_store.frames import FRAME_START_MARKERS, VIDEO_TRANSFER_SYNTAXES
from tessera_store.metadata import dataset_to_json

SHARED_TESTDATA = Path(__file__).resolve().parents[2].parent / "shared" / "testdata"
SHARED_INDEX: list[dict[str, Any]] = json.loads((SHARED_TESTDATA / "index.json").read_text())
PYDICOM_FOLDERS = [
    Path(pydicom.data.__file__).parent / "test_files",
    Path(pydicom.data.__file__).parent / "charset_files",
    Path(data_store.__file__).parent / "data",
]
DEFLATED = "1.2.840.10008.1.2.1.99"
PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

A900 = FailureReason.DATASET_DOES_NOT_MATCH_SOP_CLASS
C000 = FailureReason.CANNOT_UNDERSTAND
C122 = FailureReason.TRANSFER_SYNTAX_NOT_SUPPORTED
C409 = FailureReason.STUDY_UID_MISMATCH


def pydicom_file(name: str) -> Path:
    """A file shipped by pydicom or pydicom-data, found without any download."""
    for folder in PYDICOM_FOLDERS:
        found = sorted(folder.rglob(name))
        if found:
            return found[0]
    raise FileNotFoundError(name)


def analyze(data: bytes, expected_study_uid: str | None = None) -> InstanceAnalysis:
    return analyze_instance(io.BytesIO(data), size=len(data), expected_study_uid=expected_study_uid)


def analyze_path(path: Path) -> InstanceAnalysis:
    with path.open("rb") as fp:
        return analyze_instance(fp, size=path.stat().st_size, expected_study_uid=None)


def instance_path(result: InstanceAnalysis) -> str:
    return f"studies/{result.study_uid}/series/{result.series_uid}/instances/{result.sop_uid}"


@pytest.mark.parametrize(
    "name",
    ["CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "JPEG2000.dcm"],
)
def test_pydicom_stops_at_the_pixel_data_element_header(name: str) -> None:
    """What the analysis relies on: parsing stops with the file at the (7FE0,0010) tag."""
    with pydicom_file(name).open("rb") as fp:
        ds = pydicom.dcmread(fp, stop_before_pixels=True)
        endian = "<" if ds.original_encoding[1] else ">"
        assert struct.unpack(f"{endian}HH", fp.read(4)) == (0x7FE0, 0x0010)


# --- shared/testdata: every file is accepted, with the UIDs and frame counts of index.json ---


@pytest.mark.parametrize("entry", SHARED_INDEX, ids=lambda e: e["file"])
def test_shared_testdata(entry: dict[str, Any]) -> None:
    path = SHARED_TESTDATA / entry["file"]
    result = analyze_path(path)

    assert (result.study_uid, result.series_uid, result.sop_uid, result.sop_class_uid) == (
        entry["study_instance_uid"],
        entry["series_instance_uid"],
        entry["sop_instance_uid"],
        entry["sop_class_uid"],
    )
    assert result.transfer_syntax_uid == entry["transfer_syntax_uid"]

    reference = pydicom.dcmread(path)
    pixel = next((reference[k] for k in PIXEL_DATA_KEYWORDS if k in reference), None)
    if pixel is None or result.transfer_syntax_uid == DEFLATED:
        # Nothing to index (PDF, SR, KOS), or offsets inside a deflated stream (PS3.5 §A.5).
        assert result.frames is None
        return
    frames = result.frames
    assert frames is not None
    assert frames.number_of_frames == entry["frames"]
    data = path.read_bytes()
    if not frames.encapsulated:
        assert frames.data_offset is not None and frames.data_length is not None
        assert frames.data_offset + frames.data_length <= len(data)
        assert data[frames.data_offset : frames.data_offset + frames.data_length] == pixel.value
        if frames.frame_length is not None:
            assert frames.frame_length * frames.number_of_frames <= frames.data_length
        return
    fragments = [data[offset : offset + length] for offset, length in frames.fragments]
    (table_length,) = struct.unpack("<L", pixel.value[4:8])
    assert fragments == list(generate_fragments(pixel.value[8 + table_length :]))
    if result.transfer_syntax_uid in VIDEO_TRANSFER_SYNTAXES:
        assert frames.frames == []
        return
    assert len(frames.frames) == entry["frames"]
    frame_bytes = [b"".join(fragments[first : first + n]) for first, n in frames.frames]
    marker = FRAME_START_MARKERS.get(result.transfer_syntax_uid)
    if marker is not None:
        assert all(frame.startswith(marker) for frame in frame_bytes)
    expected = generate_frames(pixel.value, number_of_frames=entry["frames"])
    assert frame_bytes == list(expected)


# --- every PS3.10 file pydicom ships: only InstanceRejectedError, and only for these ---

#: Files pydicom ships on purpose as odd or broken, and the Failure Reason each must get.
PYDICOM_REJECTIONS: dict[str, FailureReason] = {
    # Study or Series Instance UID missing: fragments made to test codecs.
    "JPEGLSNearLossless_08.dcm": A900,
    "JPEGLSNearLossless_16.dcm": A900,
    "SC_rgb_jls_lossy_line.dcm": A900,
    "SC_rgb_jls_lossy_sample.dcm": A900,
    # Datasets made to test the parser, without SOP Class UID.
    "UN_sequence.dcm": A900,
    "no_meta_group_length.dcm": A900,
    "nested_priv_SQ.dcm": A900,
    "priv_SQ.dcm": A900,
    "empty_charset_LEI.dcm": A900,
    "chrSQEncoding.dcm": A900,
    "chrSQEncoding1.dcm": A900,
    # Media Storage Directories are not instances.
    "DICOMDIR": A900,
    "DICOMDIR-bigEnd": A900,
    "DICOMDIR-empty.dcm": A900,
    "DICOMDIR-implicit": A900,
    "DICOMDIR-nooffset": A900,
    "DICOMDIR-nopatient": A900,
    "DICOMDIR-reordered": A900,
    # SOP Instance UID is a hex digest, not a UID.
    "bad_sequence.dcm": A900,
    "meta_missing_tsyntax.dcm": C122,
    "rtplan_truncated.dcm": C000,
    "MR_truncated.dcm": C000,
    "emri_small_jpeg_2k_lossless_too_short.dcm": C000,
}


def _pydicom_corpus() -> list[Any]:
    files = []
    for folder in PYDICOM_FOLDERS:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            with path.open("rb") as fp:
                if fp.read(132)[128:] != b"DICM":
                    continue
            files.append(pytest.param(path, id=str(path.relative_to(folder.parent))))
    return files


@pytest.mark.parametrize("path", _pydicom_corpus())
def test_pydicom_corpus(path: Path) -> None:
    expected = PYDICOM_REJECTIONS.get(path.name)
    try:
        result = analyze_path(path)
    except InstanceRejectedError as exc:
        assert exc.failure_reason == expected, exc.reason
        return
    assert expected is None, f"accepted, but expected {expected!r}"
    reference = pydicom.dcmread(path, stop_before_pixels=True)
    assert result.sop_uid == reference.SOPInstanceUID
    assert result.study_uid == reference.StudyInstanceUID
    json.dumps(result.metadata, allow_nan=False)


# --- hostile uploads ---


def file_bytes(name: str) -> bytes:
    return pydicom_file(name).read_bytes()


def rewritten(name: str, change: Callable[[Dataset], None]) -> Callable[[], bytes]:
    def make() -> bytes:
        ds = pydicom.dcmread(io.BytesIO(file_bytes(name)))
        change(ds)
        buffer = io.BytesIO()
        ds.save_as(buffer)
        return buffer.getvalue()

    return make


def patched(name: str, old: bytes, new: bytes) -> Callable[[], bytes]:
    def make() -> bytes:
        data = file_bytes(name)
        assert len(old) == len(new) and data.count(old) == 1
        return data.replace(old, new)

    return make


def cut(name: str, end: int) -> Callable[[], bytes]:
    return lambda: file_bytes(name)[:end]


def first_fragment_item_broken() -> bytes:
    data = file_bytes("JPEG2000.dcm")
    header = struct.pack("<HH", 0x7FE0, 0x0010) + b"OB\x00\x00\xff\xff\xff\xff"
    start = data.index(header) + len(header)
    (table_length,) = struct.unpack("<L", data[start + 4 : start + 8])
    fragment = start + 8 + table_length
    return data[:fragment] + b"\x08\x00\x08\x00" + data[fragment + 4 :]


def setter(keyword: str, value: str, *, meta: bool = False) -> Callable[[Dataset], None]:
    def change(ds: Dataset) -> None:
        setattr(ds.file_meta if meta else ds, keyword, value)

    return change


def deleter(keyword: str) -> Callable[[Dataset], None]:
    return lambda ds: delattr(ds, keyword)


CT_STUDY = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
TS_EXPLICIT = b"1.2.840.10008.1.2.1\x00"


@dataclass(frozen=True)
class HostileCase:
    id: str
    make: Callable[[], bytes]
    failure_reason: FailureReason
    reason: str
    expected_study_uid: str | None = None


HOSTILE = [
    HostileCase("not DICOM", lambda: b"Hello, this is not DICOM.\n" * 10, C000, "DICM"),
    HostileCase("empty file", lambda: b"", C000, "DICM"),
    HostileCase(
        "truncated in the File Meta Information", cut("CT_small.dcm", 150), C000, "truncated"
    ),
    HostileCase("truncated in the dataset header", cut("CT_small.dcm", 900), C000, "truncated"),
    HostileCase("truncated in native pixel data", cut("CT_small.dcm", -1000), C000, "truncated"),
    HostileCase("truncated in a fragment", cut("JPEG2000.dcm", -100), C000, "truncated"),
    HostileCase("truncated before the delimiter", cut("emri_small_RLE.dcm", -4), C000, "truncated"),
    HostileCase("truncated deflated dataset", cut("image_dfl.dcm", -100), C000, "truncated"),
    HostileCase("broken encapsulation", first_fragment_item_broken, C000, "pixel data"),
    HostileCase(
        "no Transfer Syntax UID",
        rewritten("CT_small.dcm", lambda ds: delattr(ds.file_meta, "TransferSyntaxUID")),
        C122,
        "(0002,0010)",
    ),
    HostileCase(
        "unknown transfer syntax",
        patched("CT_small.dcm", TS_EXPLICIT, b"1.2.840.99999.1.2.1\x00"),
        C122,
        "1.2.840.99999.1.2.1 is not supported",
    ),
    HostileCase(
        "Transfer Syntax UID with a letter",
        patched("CT_small.dcm", TS_EXPLICIT, b"1.2.840.10008.1.2.x\x00"),
        C122,
        "invalid Transfer Syntax UID",
    ),
    HostileCase(
        "missing SOP Instance UID",
        rewritten("CT_small.dcm", deleter("SOPInstanceUID")),
        A900,
        "SOP Instance UID (0008,0018) is missing",
    ),
    HostileCase(
        "missing SOP Class UID",
        rewritten("CT_small.dcm", deleter("SOPClassUID")),
        A900,
        "SOP Class UID (0008,0016) is missing",
    ),
    HostileCase(
        "missing Series Instance UID",
        rewritten("CT_small.dcm", deleter("SeriesInstanceUID")),
        A900,
        "Series Instance UID (0020,000E) is missing",
    ),
    HostileCase(
        "Study Instance UID with letters",
        rewritten("CT_small.dcm", setter("StudyInstanceUID", "1.2.840.abc.7")),
        A900,
        "Study Instance UID (0020,000D) is not a valid UID",
    ),
    HostileCase(
        "Series Instance UID longer than 64 characters",
        rewritten("CT_small.dcm", setter("SeriesInstanceUID", "1.2." + "3" * 70)),
        A900,
        "Series Instance UID (0020,000E) is not a valid UID",
    ),
    HostileCase(
        "two SOP Instance UIDs",
        rewritten("CT_small.dcm", setter("SOPInstanceUID", "1.2.3\\1.2.4")),
        A900,
        "SOP Instance UID (0008,0018) is not a valid UID",
    ),
    HostileCase(
        "File Meta SOP Class UID differs",
        rewritten("CT_small.dcm", setter("MediaStorageSOPClassUID", "1.2.3.4", meta=True)),
        A900,
        "Media Storage SOP Class UID (0002,0002)",
    ),
    HostileCase(
        "study other than the request's",
        lambda: file_bytes("CT_small.dcm"),
        C409,
        f"study {CT_STUDY}, not to study 1.2.3.4",
        expected_study_uid="1.2.3.4",
    ),
]


@pytest.mark.parametrize("case", HOSTILE, ids=lambda c: c.id)
def test_hostile_upload(case: HostileCase) -> None:
    with pytest.raises(InstanceRejectedError) as raised:
        analyze(case.make(), expected_study_uid=case.expected_study_uid)
    assert raised.value.failure_reason == case.failure_reason, raised.value.reason
    assert case.reason in raised.value.reason


#: Real exports whose File Meta names another SOP Instance than the dataset (PS3.10 §7.1):
#: stored under the dataset's UID, with Warning Reason B007.
META_INSTANCE_MISMATCH = (
    "rtplan.dcm",
    "rtdose.dcm",
    "rtdose_1frame.dcm",
    "rtdose_expb.dcm",
    "rtdose_expb_1frame.dcm",
    "badVR.dcm",
    "chrJapMulti.dcm",
    "chrJapMultiExplicitIR6.dcm",
)


@pytest.mark.parametrize("name", META_INSTANCE_MISMATCH)
def test_file_meta_instance_mismatch_is_a_warning(name: str) -> None:
    path = next(p for folder in PYDICOM_FOLDERS for p in folder.rglob(name))
    result = analyze_path(path)
    assert result.warning_reason == WarningReason.DATASET_DOES_NOT_MATCH_SOP_CLASS
    assert result.warning and "Media Storage SOP Instance UID (0002,0003)" in result.warning
    assert result.sop_uid == pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID


def test_synthetic_file_meta_instance_mismatch_is_a_warning() -> None:
    make = rewritten("CT_small.dcm", setter("MediaStorageSOPInstanceUID", "1.2.3.4", meta=True))
    result = analyze(make())
    assert result.warning_reason == WarningReason.DATASET_DOES_NOT_MATCH_SOP_CLASS
    assert result.sop_uid != "1.2.3.4"


def test_rejection_names_the_valid_uids_it_read() -> None:
    with pytest.raises(InstanceRejectedError) as raised:
        analyze(rewritten("CT_small.dcm", setter("StudyInstanceUID", "1.2.x"))())
    assert raised.value.study_uid is None
    assert raised.value.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2"
    assert raised.value.sop_uid and raised.value.series_uid

    with pytest.raises(InstanceRejectedError) as raised:
        analyze(file_bytes("CT_small.dcm"), expected_study_uid="1.2.3.4")
    assert raised.value.study_uid == CT_STUDY


def test_study_matching_the_request_is_accepted() -> None:
    assert analyze(file_bytes("CT_small.dcm"), expected_study_uid=CT_STUDY).study_uid == CT_STUDY


def test_deflate_bomb_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(analysis, "MAX_INFLATED_BYTES", 1024)
    with pytest.raises(InstanceRejectedError) as raised:
        analyze(file_bytes("image_dfl.dcm"))
    assert raised.value.failure_reason == C000
    assert "inflates beyond" in raised.value.reason


class FailingStorage(io.BytesIO):
    """A ranged reader whose storage fails after the first few reads."""

    def __init__(self, data: bytes, reads_allowed: int) -> None:
        super().__init__(data)
        self.reads_left = reads_allowed

    def read(self, size: int | None = -1, /) -> bytes:
        self.reads_left -= 1
        if self.reads_left < 0:
            raise ConnectionError("storage went away")
        return super().read(size)


def test_storage_errors_are_not_blamed_on_the_instance() -> None:
    data = file_bytes("CT_small.dcm")
    with pytest.raises(ConnectionError):
        analyze_instance(FailingStorage(data, 10), size=len(data), expected_study_uid=None)


class CountingReader(io.FileIO):
    def __init__(self, path: Path) -> None:
        super().__init__(path, "r")
        self.bytes_read = 0

    def read(self, size: int | None = -1, /) -> bytes:
        data = super().read(size)
        self.bytes_read += len(data or b"")
        return data or b""


@pytest.mark.parametrize(
    "name",
    [
        "synthetic/mg_for_presentation.dcm",
        "synthetic/xa_multiframe_jpeg_ll.dcm",
        "wsi/wsi-000000.dcm",
        "video/video_endoscopic_mpeg2.dcm",
    ],
)
def test_pixel_data_is_never_read(name: str) -> None:
    path = SHARED_TESTDATA / name
    with CountingReader(path) as fp:
        result = analyze_instance(fp, size=path.stat().st_size, expected_study_uid=None)
        frames = result.frames
        assert frames is not None
        pixel_data_start = frames.data_offset or frames.fragments[0][0]
        item_headers = 12 * len(frames.fragments)
        assert fp.bytes_read < pixel_data_start + item_headers + 1024


def test_large_values_before_pixel_data_stay_on_storage(tmp_path: Path) -> None:
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    ds.add_new(0x00091010, "LO", "TESSERA TEST")
    ds.add_new(0x00091011, "OB", b"\x01" * (4 * 1024 * 1024))
    path = tmp_path / "large_private.dcm"
    ds.save_as(path)
    with CountingReader(path) as fp:
        result = analyze_instance(fp, size=path.stat().st_size, expected_study_uid=None)
        assert fp.bytes_read < 64 * 1024
    assert result.metadata["00091011"] == {
        "vr": "OB",
        "BulkDataURI": f"{instance_path(result)}/bulkdata/00091011",
    }


# --- the DICOM JSON Model (PS3.18 Annex F) ---


@pytest.mark.parametrize(
    ("name", "key", "vr"),
    [
        ("CT_small.dcm", "7FE00010", "OW"),
        ("MR_small_implicit.dcm", "7FE00010", "OW"),
        ("MR_small_bigendian.dcm", "7FE00010", "OW"),
        ("JPEG2000.dcm", "7FE00010", "OB"),
        ("image_dfl.dcm", "7FE00010", "OB"),
        ("parametric_map_float.dcm", "7FE00008", "OF"),
    ],
)
def test_pixel_data_is_a_bulk_data_uri(name: str, key: str, vr: str) -> None:
    shared = SHARED_TESTDATA / "highdicom" / name
    result = analyze_path(shared if shared.exists() else pydicom_file(name))
    assert result.metadata[key] == {
        "vr": vr,
        "BulkDataURI": f"{instance_path(result)}/bulkdata/{key}",
    }


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("waveform_ecg.dcm", ["54000100", 1, "54001010"]),
        ("examples_overlay.dcm", ["00880200", 0, "7FE00010"]),
    ],
    ids=["waveform data", "icon image"],
)
def test_bulk_data_in_a_sequence(name: str, path: list[Any]) -> None:
    result = analyze_path(pydicom_file(name))
    attribute: Any = result.metadata
    for step in path:
        attribute = attribute[step] if isinstance(step, str) else attribute["Value"][step]
    tag_path = "/".join(str(step) for step in path)
    assert attribute["BulkDataURI"] == f"{instance_path(result)}/bulkdata/{tag_path}"


#: Patient's Name in each character set (the examples of PS3.5 Annexes H, I, J and pydicom's).
PERSON_NAMES = [
    (
        "chrH31.dcm",
        {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"},
    ),
    ("chrI2.dcm", {"Alphabetic": "Hong^Gildong", "Ideographic": "洪^吉洞", "Phonetic": "홍^길동"}),
    ("chrX1.dcm", {"Alphabetic": "Wang^XiaoDong", "Ideographic": "王^小東"}),
    ("chrX2.dcm", {"Alphabetic": "Wang^XiaoDong", "Ideographic": "王^小东"}),
    ("chrGreek.dcm", {"Alphabetic": "Διονυσιος"}),
    ("chrArab.dcm", {"Alphabetic": "قباني^لنزار"}),
    ("chrHbrw.dcm", {"Alphabetic": "שרון^דבורה"}),
    ("chrGerm.dcm", {"Alphabetic": "Äneas^Rüdiger"}),
]


@pytest.mark.parametrize(("name", "expected"), PERSON_NAMES, ids=[n for n, _ in PERSON_NAMES])
def test_person_name_in_character_sets(name: str, expected: dict[str, str]) -> None:
    result = analyze_path(pydicom_file(name))
    encoded = json.dumps(result.metadata, ensure_ascii=False).encode("utf-8")
    assert json.loads(encoded.decode("utf-8"))["00100010"] == {"vr": "PN", "Value": [expected]}


def element(tag: int, vr: str, value: bytes) -> bytes:
    """One Explicit VR Little Endian element (PS3.5 §7.1.2)."""
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode()
    if vr in {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT"}:
        return head + b"\x00\x00" + struct.pack("<L", len(value)) + value
    return head + struct.pack("<H", len(value)) + value


def sequence(tag: int, *items: bytes) -> bytes:
    body = b"".join(struct.pack("<HHL", 0xFFFE, 0xE000, len(i)) + i for i in items)
    return element(tag, "SQ", body)


INSTANCE = "studies/1.2/series/3.4/instances/5.6"
BULK = f"{INSTANCE}/bulkdata"

#: (id, encoded elements, tag key, expected JSON attribute)
ELEMENTS: list[tuple[str, bytes, str, dict[str, Any]]] = [
    ("IS", element(0x00200013, "IS", b"12"), "00200013", {"vr": "IS", "Value": [12]}),
    (
        "IS not an integer is kept as text",
        element(0x00200013, "IS", b"1.5 "),
        "00200013",
        {"vr": "IS", "Value": ["1.5"]},
    ),
    (
        "DS values",
        element(0x00281050, "DS", b"40.5\\-3 "),
        "00281050",
        {"vr": "DS", "Value": [40.5, -3]},
    ),
    (
        "DS malformed is kept as text",
        element(0x00281050, "DS", b"1,5 "),
        "00281050",
        {"vr": "DS", "Value": ["1,5"]},
    ),
    (
        "empty value among several is null",
        element(0x00080008, "CS", b"A\\\\B "),
        "00080008",
        {"vr": "CS", "Value": ["A", None, "B"]},
    ),
    ("empty attribute has no Value", element(0x00080070, "LO", b""), "00080070", {"vr": "LO"}),
    (
        "PN",
        element(0x00100010, "PN", b"Doe^John"),
        "00100010",
        {"vr": "PN", "Value": [{"Alphabetic": "Doe^John"}]},
    ),
    (
        "AT",
        element(0x00209165, "AT", struct.pack("<HH", 0x0010, 0x0020)),
        "00209165",
        {"vr": "AT", "Value": ["00100020"]},
    ),
    (
        "US of a wrong length keeps only its VR",
        element(0x00280010, "US", b"\x01\x00\x02"),
        "00280010",
        {"vr": "US"},
    ),
    (
        "FD not a number is null",
        element(0x00189087, "FD", struct.pack("<d", math.nan)),
        "00189087",
        {"vr": "FD", "Value": [None]},
    ),
    (
        "private creator",
        element(0x00090010, "LO", b"ACME 1.0"),
        "00090010",
        {"vr": "LO", "Value": ["ACME 1.0"]},
    ),
    (
        "private UN inline",
        element(0x00091001, "UN", b"\x01\x02"),
        "00091001",
        {"vr": "UN", "InlineBinary": "AQI="},
    ),
    (
        "OB up to the threshold is inline",
        element(0x00420011, "OB", b"\x00" * 1024),
        "00420011",
        {"vr": "OB", "InlineBinary": "AAAA" * 341 + "AA=="},
    ),
    (
        "OB over the threshold is bulk",
        element(0x00420011, "OB", b"\x00" * 1026),
        "00420011",
        {"vr": "OB", "BulkDataURI": f"{BULK}/00420011"},
    ),
    ("empty sequence", sequence(0x00081115), "00081115", {"vr": "SQ"}),
    (
        "sequence with an empty item",
        sequence(0x00081115, b""),
        "00081115",
        {"vr": "SQ", "Value": [{}]},
    ),
    (
        "bulk value in nested sequences",
        sequence(0x00400275, b"", sequence(0x00081115, element(0x00420011, "OB", b"\x01" * 2000))),
        "00400275",
        {
            "vr": "SQ",
            "Value": [
                {},
                {
                    "00081115": {
                        "vr": "SQ",
                        "Value": [
                            {
                                "00420011": {
                                    "vr": "OB",
                                    "BulkDataURI": f"{BULK}/00400275/1/00081115/0/00420011",
                                }
                            }
                        ],
                    }
                },
            ],
        },
    ),
]


@pytest.mark.parametrize(
    ("encoded", "key", "expected"), [e[1:] for e in ELEMENTS], ids=[e[0] for e in ELEMENTS]
)
def test_element_json(encoded: bytes, key: str, expected: dict[str, Any]) -> None:
    ds = read_dataset(io.BytesIO(encoded), is_implicit_VR=False, is_little_endian=True)
    result = dataset_to_json(ds, instance_path=INSTANCE)
    assert result == {key: expected}
