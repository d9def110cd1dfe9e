"""Elements converted straight from their bytes (``raw_values``) give the JSON pydicom's
conversion gives: on every DICOM file of the test corpus, and on the edge cases of padding,
empty values, person name groups, character sets and numbers."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from tests.support.dicom_files import SHARED_TESTDATA, pydicom_paths

from tessera_store import metadata
from tessera_store.metadata import dataset_to_json
from tessera_store.raw_values import element_json


def corpus() -> list[Path]:
    """Every file of pydicom's and the shared test data (readers skip what is not DICOM)."""
    shared = sorted(p for p in SHARED_TESTDATA.rglob("*") if p.is_file())
    return [p for p in [*pydicom_paths(), *shared] if p.suffix.lower() not in {".json", ".md"}]


def metadata_of(path: Path, *, convert_raw: bool, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(metadata, "CONVERT_RAW", convert_raw)
    ds = pydicom.dcmread(path, stop_before_pixels=True, defer_size=4096, force=True)
    return dataset_to_json(ds, instance_path="studies/1/series/2/instances/3")


def test_the_corpus_converts_as_pydicom_converts(monkeypatch: pytest.MonkeyPatch) -> None:
    compared = 0
    for path in corpus():
        try:
            expected = metadata_of(path, convert_raw=False, monkeypatch=monkeypatch)
        except Exception:
            continue  # not a dataset pydicom reads
        assert metadata_of(path, convert_raw=True, monkeypatch=monkeypatch) == expected, path
        compared += 1
    assert compared > 250


def raw(tag: str, vr: str | None, value: bytes, *, little_endian: bool = True) -> RawDataElement:
    return RawDataElement(Tag(tag), vr, len(value), value, 0, vr is None, little_endian)


def through_pydicom(element: RawDataElement, charset: str | None = None) -> Any:
    ds = Dataset()
    if charset is not None:
        ds.SpecificCharacterSet = charset
    ds[element.tag] = element
    ds.is_little_endian, ds.is_implicit_VR = element.is_little_endian, element.is_implicit_VR
    return metadata._converted_json(ds[element.tag], "", 1024)


EDGES = [
    ("00080060", "CS", b"CT"),
    ("00080008", "CS", b"ORIGINAL \\PRIMARY\\AXIAL "),
    ("00080008", "CS", b"ORIGINAL\\\\AXIAL"),
    ("00080008", "CS", b"  "),
    ("00080018", "UI", b"1.2.3.4\x00"),
    ("00081150", "UI", b"1.2\\1.3"),
    ("00080020", "DA", b"20240101"),
    ("00080030", "TM", b"101500.123 "),
    ("00101010", "AS", b"045Y"),
    ("00020016", "AE", b" STORESCU  \\ OTHER"),
    ("00081030", "LO", b"Chest \\ Abdomen  "),
    ("00081030", "LO", b"\\"),
    ("00200020", "SH", b" leading kept "),
    ("00204000", "LT", b"one\\line  \x00"),
    ("00081190", "UR", b"http://example.com/a  "),
    ("00100010", "PN", b"Doe^John"),
    ("00100010", "PN", b"Doe^John=\xe5\xb1\xb1\xe7\x94\xb0=yamada"),
    ("00100010", "PN", b"Doe^John\\=Ideo\\==Phon "),
    ("00200013", "IS", b" 12 "),
    ("00200013", "IS", b"1\\\\-3"),
    ("00280030", "DS", b"0.5\\.25 "),
    ("00280030", "DS", b"1e3\\-2.5E-2"),
    ("00280010", "US", struct.pack("<H", 512)),
    ("00280106", "SS", struct.pack("<2h", -5, 7)),
    ("00181310", "US", struct.pack("<4H", 0, 512, 512, 0)),
    ("00189087", "FD", struct.pack("<3d", 1.5, float("nan"), -0.0)),
    ("00189089", "FL", struct.pack("<2f", 0.1, float("inf"))),
    ("00720066", "UL", struct.pack("<L", 4_000_000_000)),
    ("00280010", "US", b""),
]


@pytest.mark.parametrize(("tag", "vr", "value"), EDGES)
@pytest.mark.parametrize("charset", [None, "ISO_IR 192", "ISO_IR 100"])
def test_edge_cases_convert_as_pydicom_converts(
    tag: str, vr: str, value: bytes, charset: str | None
) -> None:
    element = raw(tag, vr, value)
    if charset is None and any(b > 0x7F for b in value) and vr == "PN":
        charset = "ISO_IR 192"
    encodings = {None: ["iso8859"], "ISO_IR 192": ["UTF8"], "ISO_IR 100": ["latin_1"]}[charset]
    fast = element_json(element, encodings, little_endian=True)
    assert fast is not None
    assert fast == through_pydicom(element, charset)


def test_big_endian_numbers() -> None:
    element = raw("00280010", "US", struct.pack(">2H", 512, 3), little_endian=False)
    assert element_json(element, ["iso8859"], little_endian=False) == {
        "vr": "US",
        "Value": [512, 3],
    }


@pytest.mark.parametrize(
    ("element", "encodings", "why"),
    [
        (raw("00100010", "PN", b"\x1b$B...\x1b(B"), ["iso8859"], "escape sequence"),
        (raw("00100010", "LO", b"abc"), ["iso8859", "iso2022_jp"], "several encodings"),
        (raw("00100010", "LO", b"abc"), ["iso_ir_144"], "an encoding not handled here"),
        (raw("00081030", "LO", b"\xff\xfe"), ["UTF8"], "bytes that are not UTF-8"),
        (raw("00200013", "IS", b"12a"), ["iso8859"], "an IS pydicom refuses"),
        (raw("00200013", "IS", b"1.5"), ["iso8859"], "an IS that is not an integer"),
        (raw("00280030", "DS", b"NaN"), ["iso8859"], "a DS that is not finite"),
        (raw("00280010", "US", b"\x01\x02\x03"), ["iso8859"], "a partial value"),
        (raw("00283002", "US", struct.pack("<3H", 0, 0, 16)), ["iso8859"], "LUT Descriptor"),
        (raw("00100010", "UN", b"abc"), ["iso8859"], "UN"),
        (raw("00080005", "SQ", b""), ["iso8859"], "SQ"),
        (raw("00100010", None, b"Doe^John"), ["iso8859"], "implicit VR"),
        (raw("00100010", "PN", b"a=b=c=d"), ["iso8859"], "four name groups"),
        (raw("00100010", "PN", b"=="), ["iso8859"], "a name of empty groups"),
        (raw("00100010", "PN", b"Doe\\ "), ["iso8859"], "an empty name among several"),
    ],
)
def test_what_is_left_to_pydicom(element: RawDataElement, encodings: list[str], why: str) -> None:
    assert element_json(element, encodings, little_endian=True) is None, why
