"""Bulk data: HTTP byte ranges (RFC 9110 §14) and element byte ranges in stored files."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from tessera_gateway.element_ranges import (
    ElementNotFoundError,
    TagPathError,
    locate_element,
    parse_tag_path,
)
from tessera_gateway.ranges import ByteRange, RangeNotSatisfiableError, parse_range

RANGES = [
    ("bytes=0-99", 1000, ByteRange(0, 100)),
    ("bytes=100-", 1000, ByteRange(100, 1000)),
    ("bytes=-10", 1000, ByteRange(990, 1000)),
    ("bytes=-5000", 1000, ByteRange(0, 1000)),
    ("bytes=900-5000", 1000, ByteRange(900, 1000)),
    ("bytes = 1 - 2", 1000, ByteRange(1, 3)),
    (None, 1000, None),
    ("bytes=0-1,5-6", 1000, None),
    ("items=0-1", 1000, None),
    ("bytes=5-1", 1000, None),
    ("bytes=-", 1000, None),
]


@pytest.mark.parametrize(("header", "size", "expected"), RANGES, ids=[str(r[0]) for r in RANGES])
def test_parse_range(header: str | None, size: int, expected: ByteRange | None) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=2000-3000", "bytes=-0"])
def test_unsatisfiable(header: str) -> None:
    with pytest.raises(RangeNotSatisfiableError):
        parse_range(header, 1000)


def test_content_range() -> None:
    assert ByteRange(10, 20).content_range(100) == "bytes 10-19/100"


@pytest.mark.parametrize(
    ("text", "sequences", "tag"),
    [
        ("7FE00010", (), 0x7FE00010),
        ("00540016/0/00181072", ((0x00540016, 0),), 0x00181072),
        ("00880200/12/7fe00010", ((0x00880200, 12),), 0x7FE00010),
    ],
)
def test_tag_paths(text: str, sequences: tuple[tuple[int, int], ...], tag: int) -> None:
    path = parse_tag_path(text)
    assert (path.sequences, path.tag) == (sequences, tag)
    assert str(path) == text.upper()


@pytest.mark.parametrize("text", ["", "7FE0001", "7FE00010/", "0054016/0/00181072", "../x", "a/b"])
def test_bad_tag_paths(text: str) -> None:
    with pytest.raises(TagPathError):
        parse_tag_path(text)


ELEMENTS = [
    ("waveform_ecg.dcm", "54000100/1/54001010"),
    ("waveform_ecg.dcm", "54000100/0/54001010"),
    ("examples_overlay.dcm", "60003000"),
    ("examples_overlay.dcm", "00880200/0/7FE00010"),
    ("CT_small.dcm", "00431029"),
    ("gdcm-US-ALOKA-16.dcm", "00281221"),
]


@pytest.mark.parametrize(("name", "text"), ELEMENTS, ids=[f"{n}:{t}" for n, t in ELEMENTS])
def test_locate_element(name: str, text: str) -> None:
    path = get_testdata_file(name)
    assert path is not None
    data = Path(path).read_bytes()
    found = locate_element(io.BytesIO(data), parse_tag_path(text))
    dataset = pydicom.dcmread(path)
    tag_path = parse_tag_path(text)
    for tag, item in tag_path.sequences:
        dataset = dataset[tag].value[item]
    value = dataset[tag_path.tag].value
    value += b"\x00" * (len(value) % 2)
    assert data[found.offset : found.offset + found.length] == value


def test_missing_elements() -> None:
    path = get_testdata_file("CT_small.dcm")
    assert path is not None
    data = Path(path).read_bytes()
    for text in ("00431030", "00540016/0/00181072", "00080008/0/00100010"):
        with pytest.raises(ElementNotFoundError):
            locate_element(io.BytesIO(data), parse_tag_path(text))
    with pytest.raises(ElementNotFoundError):
        locate_element(io.BytesIO(b"not dicom at all" * 20), parse_tag_path("00100010"))
