"""The frame index (PS3.5 §8.1.1 native, §A.4 encapsulated), on pixel data built byte by byte."""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from typing import Any

import pytest

from tessera_common.messages import FrameIndex
from tessera_store.frames import (
    MalformedPixelDataError,
    TruncatedError,
    index_pixel_data,
    native_frame_length,
)

PREFIX = b"\x00" * 20  # stands for the dataset before the pixel data element
SOI = b"\xff\xd8"
J2K = b"\xff\x4f\xff\x51"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_2000 = "1.2.840.10008.1.2.4.90"
RLE = "1.2.840.10008.1.2.5"
H264 = "1.2.840.10008.1.2.4.102"


def element_header(tag: int, vr: str, length: int, *, explicit: bool, little: bool) -> bytes:
    endian = "<" if little else ">"
    group_element = struct.pack(f"{endian}HH", tag >> 16, tag & 0xFFFF)
    if not explicit:
        return group_element + struct.pack(f"{endian}L", length)
    return group_element + vr.encode() + b"\x00\x00" + struct.pack(f"{endian}L", length)


def item(value: bytes, element: int = 0xE000) -> bytes:
    return struct.pack("<HHL", 0xFFFE, element, len(value)) + value


def encapsulated(
    frames: list[list[bytes]], *, basic_offsets: list[int] | None = None
) -> tuple[bytes, list[int]]:
    """An encapsulated Pixel Data element and the offsets of each frame's first item."""
    offsets, position = [], 0
    for fragments in frames:
        offsets.append(position)
        position += sum(8 + len(f) for f in fragments)
    table = b"".join(struct.pack("<L", o) for o in (basic_offsets or []))
    body = b"".join(item(f) for fragments in frames for f in fragments)
    header = element_header(0x7FE00010, "OB", 0xFFFFFFFF, explicit=True, little=True)
    return header + item(table) + body + item(b"", 0xE0DD), offsets


def index(data: bytes, **kwargs: Any) -> FrameIndex:
    blob = PREFIX + data
    arguments: dict[str, Any] = {
        "start": len(PREFIX),
        "size": len(blob),
        "explicit_vr": True,
        "little_endian": True,
        "number_of_frames": 1,
        "rows": 2,
        "columns": 2,
        "samples_per_pixel": 1,
        "bits_allocated": 8,
    }
    arguments.update(kwargs)
    return index_pixel_data(io.BytesIO(blob), **arguments)


@dataclass(frozen=True)
class FrameCase:
    id: str
    frames: list[list[bytes]]
    expected: list[tuple[int, int]]
    transfer_syntax: str = JPEG_BASELINE
    basic_offsets: bool = False
    extended_offsets: bool = False
    bad_basic_offsets: bool = False
    number_of_frames: int | None = None


A, B, C, D, E = (bytes([n]) * 6 for n in range(1, 6))
FRAME_CASES = [
    FrameCase("one frame takes every fragment", [[A, B, C]], [(0, 3)]),
    FrameCase("one fragment per frame", [[A], [B], [C]], [(0, 1), (1, 1), (2, 1)]),
    FrameCase(
        "Basic Offset Table",
        [[A, B], [C], [D, E]],
        [(0, 2), (2, 1), (3, 2)],
        transfer_syntax=RLE,
        basic_offsets=True,
    ),
    FrameCase(
        "Extended Offset Table",
        [[A, B], [C], [D, E]],
        [(0, 2), (2, 1), (3, 2)],
        transfer_syntax=RLE,
        extended_offsets=True,
    ),
    FrameCase(
        "JPEG SOI markers",
        [[SOI + A, B], [SOI + C], [SOI + D, E]],
        [(0, 2), (2, 1), (3, 2)],
    ),
    FrameCase(
        "JPEG 2000 SOC+SIZ markers",
        [[J2K + A, B], [J2K + C, D]],
        [(0, 2), (2, 2)],
        transfer_syntax=JPEG_2000,
    ),
    FrameCase(
        "wrong Basic Offset Table falls back to markers",
        [[SOI + A, B], [SOI + C], [SOI + D, E]],
        [(0, 2), (2, 1), (3, 2)],
        bad_basic_offsets=True,
    ),
    FrameCase(
        "markers that do not count the frames leave frames empty",
        [[SOI + A, SOI + B], [SOI + C, D]],
        [],
    ),
    FrameCase("no table and no markers leave frames empty", [[A, B], [C, D]], [], RLE),
    FrameCase(
        "video streams are never split into frames",
        [[A], [B], [C]],
        [],
        transfer_syntax=H264,
    ),
    FrameCase("no fragments at all", [], [], number_of_frames=1),
]


@pytest.mark.parametrize("case", FRAME_CASES, ids=lambda c: c.id)
def test_encapsulated_frames(case: FrameCase) -> None:
    _, first_items = encapsulated(case.frames)
    basic = first_items if case.basic_offsets else None
    if case.bad_basic_offsets:
        basic = [o + 2 for o in first_items]
    data, _ = encapsulated(case.frames, basic_offsets=basic)
    extended = (first_items, [0] * len(first_items)) if case.extended_offsets else None
    number_of_frames = (
        case.number_of_frames if case.number_of_frames is not None else len(case.frames)
    )

    result = index(
        data,
        number_of_frames=number_of_frames,
        extended_offsets=extended,
        transfer_syntax_uid=case.transfer_syntax,
    )

    assert result.encapsulated
    assert result.frames == case.expected
    blob = PREFIX + data
    fragments = [f for frame in case.frames for f in frame]
    found = [blob[o : o + n] for o, n in result.fragments]
    assert found == fragments


@dataclass(frozen=True)
class NativeCase:
    id: str
    rows: int | None
    columns: int | None
    samples_per_pixel: int
    bits_allocated: int
    expected: int | None
    photometric: str = "MONOCHROME2"
    number_of_frames: int = 1


NATIVE_CASES = [
    NativeCase("16-bit grey", 4, 4, 1, 16, 32),
    NativeCase("8-bit RGB", 2, 3, 3, 8, 18),
    NativeCase("YBR_FULL_422 holds two samples per pixel", 2, 2, 3, 8, 8, "YBR_FULL_422"),
    NativeCase("32-bit float", 2, 2, 1, 32, 16),
    NativeCase("bit-packed BitsAllocated 1", 8, 8, 1, 1, None),
    NativeCase("not a whole number of bytes", 1, 3, 1, 12, None),
    NativeCase("Rows missing", None, 4, 1, 16, None),
]


@pytest.mark.parametrize("case", NATIVE_CASES, ids=lambda c: c.id)
def test_native_frame_length(case: NativeCase) -> None:
    length = native_frame_length(
        case.rows, case.columns, case.samples_per_pixel, case.bits_allocated, case.photometric
    )
    assert length == case.expected


@dataclass(frozen=True)
class EncodingCase:
    id: str
    tag: int
    vr: str
    explicit: bool
    little: bool
    header_length: int = field(default=12)


ENCODINGS = [
    EncodingCase("explicit VR little endian OW", 0x7FE00010, "OW", True, True),
    EncodingCase("explicit VR big endian OW", 0x7FE00010, "OW", True, False),
    EncodingCase("implicit VR little endian", 0x7FE00010, "OW", False, True, 8),
    EncodingCase("Float Pixel Data", 0x7FE00008, "OF", True, True),
    EncodingCase("Double Float Pixel Data", 0x7FE00009, "OD", True, True),
]


@pytest.mark.parametrize("case", ENCODINGS, ids=lambda c: c.id)
def test_native_pixel_data(case: EncodingCase) -> None:
    value = bytes(range(64))
    data = element_header(case.tag, case.vr, 64, explicit=case.explicit, little=case.little)
    result = index(
        data + value,
        explicit_vr=case.explicit,
        little_endian=case.little,
        number_of_frames=2,
        rows=2,
        columns=2,
        bits_allocated=64,
    )
    assert not result.encapsulated
    assert result.data_offset == len(PREFIX) + case.header_length
    assert result.data_length == 64
    assert result.frame_length == 32


def test_frames_longer_than_the_value_are_not_indexed() -> None:
    data = element_header(0x7FE00010, "OW", 16, explicit=True, little=True) + bytes(16)
    result = index(data, number_of_frames=3, rows=2, columns=2, bits_allocated=16)
    assert result.frame_length is None


@dataclass(frozen=True)
class BrokenCase:
    id: str
    data: bytes
    error: type[Exception]


ENCAPSULATED, _ = encapsulated([[A], [B]])
BROKEN = [
    BrokenCase(
        "native value past the end",
        element_header(0x7FE00010, "OW", 64, explicit=True, little=True) + bytes(10),
        TruncatedError,
    ),
    BrokenCase("element header cut", ENCAPSULATED[:6], TruncatedError),
    BrokenCase("no sequence delimiter", ENCAPSULATED[:-8], TruncatedError),
    BrokenCase("fragment past the end", ENCAPSULATED[:-12], TruncatedError),
    BrokenCase(
        "an item that is not an item",
        ENCAPSULATED[:20] + struct.pack("<HHL", 0x0008, 0x0008, 6) + A + item(b"", 0xE0DD),
        MalformedPixelDataError,
    ),
    BrokenCase(
        "undefined-length item",
        ENCAPSULATED[:12] + struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF),
        MalformedPixelDataError,
    ),
    BrokenCase(
        "not a pixel data element",
        element_header(0x00100010, "OW", 4, explicit=True, little=True) + bytes(4),
        MalformedPixelDataError,
    ),
]


@pytest.mark.parametrize("case", BROKEN, ids=lambda c: c.id)
def test_broken_pixel_data(case: BrokenCase) -> None:
    with pytest.raises(case.error) as raised:
        index(case.data, number_of_frames=2)
    if case.error is MalformedPixelDataError:
        assert not isinstance(raised.value, TruncatedError)
