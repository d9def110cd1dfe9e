"""Write a derived PS3.10 file: the source's dataset with new pixel data in another syntax.

The encoded frames are spooled to a temporary file first (their lengths are needed for the
Basic Offset Table, which precedes them, PS3.5 §A.4), then the file is assembled: preamble,
File Meta Information and dataset written by pydicom in the target encoding, then the Pixel
Data element written here, item by item, so no step holds more than one frame in memory.
The frame index of the result is returned, in the store's ``FrameIndex`` form.
"""

from __future__ import annotations

import shutil
import struct
import tempfile
from typing import BinaryIO

import numpy as np
from pydicom import dcmwrite, uid
from pydicom.dataset import Dataset, FileMetaDataset

from tessera_common.messages import FrameIndex

from .pixels import LOSSY_METHODS, NATIVE_TARGETS, PixelDescription, native_bytes

PIXEL_DATA = 0x7FE00010
FLOAT_PIXEL_DATA = 0x7FE00008
DOUBLE_FLOAT_PIXEL_DATA = 0x7FE00009
EXTENDED_OFFSET_TABLE = 0x7FE00001
EXTENDED_OFFSET_TABLE_LENGTHS = 0x7FE00002
_PIXEL_TAGS = (PIXEL_DATA, FLOAT_PIXEL_DATA, DOUBLE_FLOAT_PIXEL_DATA)
_NATIVE_VR = {FLOAT_PIXEL_DATA: b"OF", DOUBLE_FLOAT_PIXEL_DATA: b"OD"}
_ITEM = struct.pack("<HH", 0xFFFE, 0xE000)
_SEQUENCE_DELIMITER = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
_MAX_BOT_OFFSET = 0xFFFFFFFF
_SPOOL_BYTES = 16 * 1024 * 1024
_COPY_CHUNK = 1024 * 1024


class EncodedFrames:
    """Encoded frames spooled to a temporary file, with their lengths."""

    def __init__(self) -> None:
        self._spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115
        self.lengths: list[int] = []
        self.description: PixelDescription | None = None
        self._bit_planes: list[np.ndarray] = []

    def add(self, data: bytes, description: PixelDescription) -> None:
        if self.description is None:
            self.description = description
        elif _shape(description) != _shape(self.description):
            raise ValueError("frames decoded to different image descriptions")
        if len(data) % 2:
            data += b"\x00"  # PS3.5 §A.4: items have even length; padding is a trailing NULL
        self._spool.write(data)
        self.lengths.append(len(data))

    def add_bits(self, array: np.ndarray, description: PixelDescription) -> None:
        """A frame of Bits Allocated 1 data: frames are packed together at the end, since a
        frame need not end on a byte boundary (PS3.5 §8.1.1)."""
        if self.description is None:
            self.description = description
        self._bit_planes.append(array)

    def finish_bits(self) -> None:
        if self._bit_planes and self.description is not None:
            data = native_bytes(np.stack(self._bit_planes), self.description)
            self._bit_planes = []
            self.add(data, self.description)

    @property
    def total(self) -> int:
        return sum(self.lengths)

    def copy_to(self, out: BinaryIO) -> None:
        self._spool.seek(0)
        shutil.copyfileobj(self._spool, out, _COPY_CHUNK)

    def write_items(self, out: BinaryIO) -> None:
        """Each frame as one item (PS3.5 §A.4): item header, then the frame's bytes."""
        self._spool.seek(0)
        for length in self.lengths:
            out.write(_ITEM + struct.pack("<L", length))
            remaining = length
            while remaining:
                chunk = self._spool.read(min(remaining, _COPY_CHUNK))
                if not chunk:
                    raise OSError("the spooled frames ended early")
                out.write(chunk)
                remaining -= len(chunk)

    def close(self) -> None:
        self._spool.close()


def _shape(d: PixelDescription) -> tuple[int, ...]:
    return (d.rows, d.columns, d.samples_per_pixel, d.bits_allocated)


def prepare_header(
    header: Dataset,
    target: str,
    description: PixelDescription | None,
    *,
    source_lossy: bool,
) -> Dataset:
    """The dataset to write before the new Pixel Data: pixel elements removed, the Image Pixel
    Description updated to what the frames now hold (PS3.3 §C.7.6.3), lossy compression
    recorded when this conversion is lossy (PS3.3 §C.7.6.1.1.5)."""
    for tag in (*_PIXEL_TAGS, EXTENDED_OFFSET_TABLE, EXTENDED_OFFSET_TABLE_LENGTHS):
        if tag in header:
            del header[tag]
    if description is not None:
        header.Rows = description.rows
        header.Columns = description.columns
        header.SamplesPerPixel = description.samples_per_pixel
        header.BitsAllocated = description.bits_allocated
        header.BitsStored = description.bits_stored
        header.HighBit = description.bits_stored - 1
        header.PixelRepresentation = description.pixel_representation
        header.PhotometricInterpretation = description.photometric_interpretation
        if description.samples_per_pixel > 1:
            header.PlanarConfiguration = 0
        elif "PlanarConfiguration" in header:
            del header.PlanarConfiguration
    method = LOSSY_METHODS.get(target)
    if method is not None and description is not None:
        header.LossyImageCompression = "01"
        methods = list(header.get("LossyImageCompressionMethod") or [])
        header.LossyImageCompressionMethod = [*methods, method] if methods else method
    elif source_lossy and "LossyImageCompression" not in header:
        header.LossyImageCompression = "01"
    if not isinstance(getattr(header, "file_meta", None), FileMetaDataset):
        header.file_meta = FileMetaDataset()
    header.file_meta.TransferSyntaxUID = uid.UID(target)
    return header


def write_instance(
    out: BinaryIO,
    header: Dataset,
    target: str,
    frames: EncodedFrames | None,
    pixel_tag: int = PIXEL_DATA,
) -> FrameIndex | None:
    """Write the PS3.10 file to ``out``; returns where its frames lie."""
    native = target in NATIVE_TARGETS
    implicit = target == uid.ImplicitVRLittleEndian
    offsets: list[int] = []
    if frames is not None and not native:
        position = 0
        for length in frames.lengths:
            offsets.append(position)
            position += 8 + length
        if offsets and offsets[-1] > _MAX_BOT_OFFSET:
            # Too large for the 32-bit Basic Offset Table: use the Extended Offset Table
            # (PS3.3 §C.7.6.3.1.8) and leave the Basic Offset Table empty.
            header.ExtendedOffsetTable = struct.pack(f"<{len(offsets)}Q", *offsets)
            header.ExtendedOffsetTableLengths = struct.pack(f"<{len(offsets)}Q", *frames.lengths)
    for _ in header.iterall():
        pass  # converts raw elements, so each is written with a VR in the new encoding
    dcmwrite(out, header, enforce_file_format=True, implicit_vr=implicit, little_endian=True)
    if frames is None:
        return None
    description = frames.description
    assert description is not None
    if native:
        return _write_native(out, frames, description, pixel_tag, implicit=implicit)
    return _write_encapsulated(out, frames, description, offsets)


def _write_native(
    out: BinaryIO,
    frames: EncodedFrames,
    description: PixelDescription,
    pixel_tag: int,
    *,
    implicit: bool,
) -> FrameIndex:
    length = frames.total
    group, element = pixel_tag >> 16, pixel_tag & 0xFFFF
    if implicit:
        out.write(struct.pack("<HHL", group, element, length))
    else:
        vr = _NATIVE_VR.get(pixel_tag, b"OB" if description.bits_allocated <= 8 else b"OW")
        out.write(struct.pack("<HH", group, element) + vr + b"\x00\x00" + struct.pack("<L", length))
    data_offset = out.tell()
    frames.copy_to(out)
    frame_length = frames.lengths[0] if description.bits_allocated != 1 else None
    if frame_length is not None and any(n != frame_length for n in frames.lengths):
        frame_length = None
    return FrameIndex(
        encapsulated=False,
        number_of_frames=description.number_of_frames,
        data_offset=data_offset,
        data_length=length,
        frame_length=frame_length,
    )


def _write_encapsulated(
    out: BinaryIO, frames: EncodedFrames, description: PixelDescription, offsets: list[int]
) -> FrameIndex:
    out.write(struct.pack("<HH", 0x7FE0, 0x0010) + b"OB\x00\x00" + b"\xff\xff\xff\xff")
    use_bot = bool(offsets) and offsets[-1] <= _MAX_BOT_OFFSET
    table = struct.pack(f"<{len(offsets)}L", *offsets) if use_bot else b""
    out.write(_ITEM + struct.pack("<L", len(table)) + table)
    fragments: list[tuple[int, int]] = []
    position = out.tell()
    for length in frames.lengths:
        fragments.append((position + 8, length))
        position += 8 + length
    frames.write_items(out)
    out.write(_SEQUENCE_DELIMITER)
    return FrameIndex(
        encapsulated=True,
        number_of_frames=len(fragments),
        fragments=fragments,
        frames=[(i, 1) for i in range(len(fragments))],
    )
