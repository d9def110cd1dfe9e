"""The frame index: where each frame's bytes lie inside a stored PS3.10 object.

WADO-RS frame retrieval (PS3.18 §10.4.1.1.4 ``/frames/{list}``) serves byte ranges of the
stored object instead of parsing it again, so the store computes, once, where the Pixel Data
value lies (native, PS3.5 §8.1.1) or where each fragment of the encapsulated value lies and
which fragments make up each frame (PS3.5 §A.4).

Only element and item headers are read, a few bytes at a time and in file order: the file
object may be backed by ranged reads over object storage, and pixel data is never held in
memory (ARCHITECTURE invariant 5).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from tessera_common.messages import FrameIndex

PIXEL_DATA = 0x7FE00010
FLOAT_PIXEL_DATA = 0x7FE00008
DOUBLE_FLOAT_PIXEL_DATA = 0x7FE00009
PIXEL_DATA_TAGS = frozenset({PIXEL_DATA, FLOAT_PIXEL_DATA, DOUBLE_FLOAT_PIXEL_DATA})

ITEM = 0xFFFEE000
SEQUENCE_DELIMITER = 0xFFFEE0DD
UNDEFINED_LENGTH = 0xFFFFFFFF

#: A hostile file can hold millions of empty fragments; refuse more than this many.
MAX_FRAGMENTS = 1 << 20

#: VRs whose explicit-VR header has 2 reserved bytes and a 32-bit length (PS3.5 §7.1.2).
_LONG_HEADER_VRS = frozenset(
    {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
)

#: The VR each pixel data tag has in Implicit VR files, where the file does not say
#: (PS3.5 §A.1: Pixel Data is OW there; encapsulated values are always OB, PS3.5 §A.4).
_IMPLICIT_VRS = {PIXEL_DATA: "OW", FLOAT_PIXEL_DATA: "OF", DOUBLE_FLOAT_PIXEL_DATA: "OD"}

_JPEG_SOI = b"\xff\xd8"
_J2K_SOC_SIZ = b"\xff\x4f\xff\x51"

#: The bytes every frame's codestream starts with, per transfer syntax: JPEG and JPEG-LS
#: open with SOI (ISO/IEC 10918-1 B.1.1.3, 14495-1 C.1.1), JPEG 2000 and HTJ2K with SOC then
#: SIZ (ISO/IEC 15444-1 A.4.1, A.5.1). Used only to split fragments into frames when neither
#: offset table says where frames start.
FRAME_START_MARKERS: dict[str, bytes] = {
    # JPEG processes 1-29 (4.50-4.66, most retired) and JPEG Lossless SV1 (4.70)
    **{f"1.2.840.10008.1.2.4.{n}": _JPEG_SOI for n in (*range(50, 67), 70)},
    "1.2.840.10008.1.2.4.80": _JPEG_SOI,  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81": _JPEG_SOI,  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90": _J2K_SOC_SIZ,  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91": _J2K_SOC_SIZ,
    "1.2.840.10008.1.2.4.92": _J2K_SOC_SIZ,  # JPEG 2000 Part 2 multi-component
    "1.2.840.10008.1.2.4.93": _J2K_SOC_SIZ,
    "1.2.840.10008.1.2.4.201": _J2K_SOC_SIZ,  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202": _J2K_SOC_SIZ,  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203": _J2K_SOC_SIZ,  # HTJ2K
}

#: MPEG-2, MPEG-4 AVC/H.264 and HEVC/H.265 (PS3.5 §8.2.5-§8.2.8): the fragments hold one
#: continuous video stream, so frames cannot be mapped to fragments without decoding it.
VIDEO_TRANSFER_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2.4.100",  # MPEG2 Main Profile / Main Level
        "1.2.840.10008.1.2.4.100.1",
        "1.2.840.10008.1.2.4.101",  # MPEG2 Main Profile / High Level
        "1.2.840.10008.1.2.4.101.1",
        "1.2.840.10008.1.2.4.102",  # MPEG-4 AVC/H.264 High Profile / Level 4.1
        "1.2.840.10008.1.2.4.102.1",
        "1.2.840.10008.1.2.4.103",  # ... BD-compatible
        "1.2.840.10008.1.2.4.103.1",
        "1.2.840.10008.1.2.4.104",  # ... High Profile / Level 4.2 for 2D video
        "1.2.840.10008.1.2.4.104.1",
        "1.2.840.10008.1.2.4.105",  # ... for 3D video
        "1.2.840.10008.1.2.4.105.1",
        "1.2.840.10008.1.2.4.106",  # ... Stereo High Profile
        "1.2.840.10008.1.2.4.106.1",
        "1.2.840.10008.1.2.4.107",  # HEVC/H.265 Main Profile / Level 5.1
        "1.2.840.10008.1.2.4.108",  # HEVC/H.265 Main 10 Profile / Level 5.1
    }
)


class SeekableReader(Protocol):
    """What is read here: a binary file that can seek (ranged reads are fine)."""

    def read(self, n: int = -1, /) -> bytes: ...

    def seek(self, offset: int, whence: int = 0, /) -> int: ...

    def tell(self) -> int: ...


class MalformedPixelDataError(ValueError):
    """The pixel data element or its encapsulation (PS3.5 §A.4) is broken."""


class TruncatedError(MalformedPixelDataError):
    """A header or value runs past the end of the file."""


@dataclass(frozen=True, slots=True)
class PixelDataHeader:
    """The element header of a pixel data element at file offset ``start``. ``length`` is
    None when undefined (encapsulated); ``value_offset`` is where the value starts."""

    tag: int
    vr: str
    length: int | None
    start: int
    value_offset: int

    @property
    def encapsulated(self) -> bool:
        return self.length is None


def read_pixel_data_header(
    fp: SeekableReader, start: int, *, explicit_vr: bool, little_endian: bool
) -> PixelDataHeader:
    """Read the element header at ``start``, which must be one of the pixel data elements
    (7FE0,0010), (7FE0,0008) or (7FE0,0009) (PS3.5 §7.1)."""
    endian = "<" if little_endian else ">"
    fp.seek(start)
    raw = fp.read(12)
    if len(raw) < 8:
        raise TruncatedError("the pixel data element header runs past the end of the file")
    group, element = struct.unpack(f"{endian}HH", raw[:4])
    tag = group << 16 | element
    if tag not in PIXEL_DATA_TAGS:
        raise MalformedPixelDataError(f"expected a pixel data element, found ({group:04X},...)")
    if not explicit_vr:
        (length,) = struct.unpack(f"{endian}L", raw[4:8])
        vr = "OB" if length == UNDEFINED_LENGTH else _IMPLICIT_VRS[tag]
        return PixelDataHeader(tag, vr, _defined(length), start, start + 8)
    vr = raw[4:6].decode("latin-1")
    if not (vr.isascii() and vr.isalpha() and vr.isupper()):
        raise MalformedPixelDataError("the pixel data element has no valid VR")
    if vr not in _LONG_HEADER_VRS:
        (short_length,) = struct.unpack(f"{endian}H", raw[6:8])
        return PixelDataHeader(tag, vr, short_length, start, start + 8)
    if len(raw) < 12:
        raise TruncatedError("the pixel data element header runs past the end of the file")
    (length,) = struct.unpack(f"{endian}L", raw[8:12])
    return PixelDataHeader(tag, vr, _defined(length), start, start + 12)


def index_pixel_data(
    fp: SeekableReader,
    *,
    start: int,
    size: int,
    explicit_vr: bool,
    little_endian: bool,
    number_of_frames: int,
    rows: int | None,
    columns: int | None,
    samples_per_pixel: int | None,
    bits_allocated: int | None,
    extended_offsets: tuple[Sequence[int], Sequence[int]] | None = None,
    transfer_syntax_uid: str | None = None,
    photometric_interpretation: str | None = None,
) -> FrameIndex:
    """Index the pixel data element whose header starts at file offset ``start``.

    ``extended_offsets`` is the (Extended Offset Table, Extended Offset Table Lengths) pair,
    (7FE0,0001) and (7FE0,0002) (PS3.3 §C.7.6.3.1.8), when the dataset has them.
    A native value shorter than ``number_of_frames`` frames gets no ``frame_length``, so no
    frame range can point outside it. Raises ``TruncatedError`` when the element runs past
    ``size`` and ``MalformedPixelDataError`` when its encapsulation is broken.
    """
    header = read_pixel_data_header(fp, start, explicit_vr=explicit_vr, little_endian=little_endian)
    if header.length is not None:
        if header.value_offset + header.length > size:
            raise TruncatedError("the pixel data value runs past the end of the file")
        frame_length = native_frame_length(
            rows, columns, samples_per_pixel, bits_allocated, photometric_interpretation
        )
        if frame_length is not None and frame_length * number_of_frames > header.length:
            frame_length = None
        return FrameIndex(
            encapsulated=False,
            number_of_frames=number_of_frames,
            data_offset=header.value_offset,
            data_length=header.length,
            frame_length=frame_length,
        )
    marker = FRAME_START_MARKERS.get(transfer_syntax_uid or "")
    encapsulation = _walk_items(
        fp, header.value_offset, size, little_endian, number_of_frames, marker
    )
    frames: list[tuple[int, int]] = []
    if transfer_syntax_uid not in VIDEO_TRANSFER_SYNTAXES:
        frames = _map_frames(encapsulation, number_of_frames, extended_offsets, marker)
    return FrameIndex(
        encapsulated=True,
        number_of_frames=number_of_frames,
        fragments=encapsulation.fragments,
        frames=frames,
    )


def native_frame_length(
    rows: int | None,
    columns: int | None,
    samples_per_pixel: int | None,
    bits_allocated: int | None,
    photometric_interpretation: str | None = None,
) -> int | None:
    """Bytes per frame of native pixel data (PS3.5 §8.1.1), or None when frames are not a
    whole number of bytes (bit-packed BitsAllocated 1) or the attributes are missing.

    YBR_FULL_422 stores two samples per pixel on average (PS3.3 §C.7.6.3.1.2).
    """
    if not rows or not columns or not samples_per_pixel or not bits_allocated:
        return None
    if bits_allocated == 1:
        return None
    samples = rows * columns * samples_per_pixel
    if photometric_interpretation == "YBR_FULL_422" and samples_per_pixel == 3:
        samples = rows * columns * 2
    bits = samples * bits_allocated
    if bits % 8:
        return None
    return bits // 8


@dataclass(frozen=True, slots=True)
class _Encapsulation:
    """What one pass over the items found: the Basic Offset Table, every fragment's value
    (offset, length), and which fragments start with the syntax's frame marker."""

    basic_offsets: list[int]
    fragments: list[tuple[int, int]]
    marked: list[bool]


def _walk_items(
    fp: SeekableReader,
    offset: int,
    size: int,
    little_endian: bool,
    number_of_frames: int,
    marker: bytes | None,
) -> _Encapsulation:
    """Walk the items of an encapsulated value to its Sequence Delimitation Item (PS3.5
    §A.4): one read per item, taking the item header and the first value bytes together."""
    unpack = struct.Struct("<HHL" if little_endian else ">HHL").unpack
    basic_offsets: list[int] = []
    fragments: list[tuple[int, int]] = []
    marked: list[bool] = []
    first = True
    while True:
        fp.seek(offset)
        raw = fp.read(12)
        if len(raw) < 8:
            raise TruncatedError("the encapsulated pixel data ends before its delimiter")
        group, element, length = unpack(raw[:8])
        tag = group << 16 | element
        if tag == SEQUENCE_DELIMITER:
            return _Encapsulation(basic_offsets, fragments, marked)
        if tag != ITEM:
            raise MalformedPixelDataError(
                "expected an item in the encapsulated pixel data, "
                f"found ({group:04X},{element:04X})"
            )
        if length == UNDEFINED_LENGTH:
            raise MalformedPixelDataError("an encapsulated pixel data item has undefined length")
        value_offset = offset + 8
        if value_offset + length > size:
            raise TruncatedError("an encapsulated pixel data item runs past the end of the file")
        if first:
            basic_offsets = _read_basic_offsets(fp, value_offset, length, number_of_frames)
            first = False
        else:
            if len(fragments) >= MAX_FRAGMENTS:
                raise MalformedPixelDataError(
                    f"the encapsulated pixel data has more than {MAX_FRAGMENTS} fragments"
                )
            fragments.append((value_offset, length))
            marked.append(marker is not None and raw[8 : 8 + min(length, 4)].startswith(marker))
        offset = value_offset + length


def _read_basic_offsets(
    fp: SeekableReader, value_offset: int, length: int, number_of_frames: int
) -> list[int]:
    """The Basic Offset Table (PS3.5 §A.4, Table A.4-1): one 32-bit offset per frame, or
    empty. A table of the wrong size is ignored rather than trusted."""
    if length == 0 or length != 4 * number_of_frames:
        return []
    fp.seek(value_offset)
    raw = fp.read(length)
    if len(raw) < length:
        raise TruncatedError("the Basic Offset Table runs past the end of the file")
    return list(struct.unpack(f"<{number_of_frames}L", raw))


def _map_frames(
    encapsulation: _Encapsulation,
    number_of_frames: int,
    extended_offsets: tuple[Sequence[int], Sequence[int]] | None,
    marker: bytes | None,
) -> list[tuple[int, int]]:
    """(first fragment, fragment count) per frame, by the first rule that applies (PS3.5
    §A.4): one frame takes every fragment; as many fragments as frames means one each; else
    the Basic Offset Table, else the Extended Offset Table, else frame start markers. Empty
    when none gives exactly ``number_of_frames`` frames."""
    fragments = encapsulation.fragments
    if not fragments or number_of_frames < 1:
        return []
    if number_of_frames == 1:
        return [(0, len(fragments))]
    if len(fragments) == number_of_frames:
        return [(i, 1) for i in range(number_of_frames)]
    for offsets in (encapsulation.basic_offsets, extended_offsets[0] if extended_offsets else []):
        if offsets:
            starts = _starts_from_offsets(offsets, fragments, number_of_frames)
            if starts is not None:
                return _spans(starts, len(fragments))
    if marker is not None:
        starts = [i for i, is_start in enumerate(encapsulation.marked) if is_start]
        if len(starts) == number_of_frames and starts[0] == 0:
            return _spans(starts, len(fragments))
    return []


def _starts_from_offsets(
    offsets: Sequence[int], fragments: list[tuple[int, int]], number_of_frames: int
) -> list[int] | None:
    """Fragment indices where frames start. Offsets count from the first byte of the first
    fragment's item header (PS3.5 §A.4; PS3.3 §C.7.6.3.1.8); None unless every offset lands
    on an item header, in increasing order, starting with the first."""
    if len(offsets) != number_of_frames or offsets[0] != 0:
        return None
    origin = fragments[0][0] - 8
    index_of = {value_offset - 8 - origin: i for i, (value_offset, _) in enumerate(fragments)}
    starts: list[int] = []
    for offset in offsets:
        index = index_of.get(offset)
        if index is None or (starts and index <= starts[-1]):
            return None
        starts.append(index)
    return starts


def _spans(starts: list[int], fragment_count: int) -> list[tuple[int, int]]:
    ends = [*starts[1:], fragment_count]
    return [(start, end - start) for start, end in zip(starts, ends, strict=True)]


def _defined(length: int) -> int | None:
    return None if length == UNDEFINED_LENGTH else length
