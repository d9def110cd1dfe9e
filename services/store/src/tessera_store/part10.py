"""Writing a PS3.10 file whose large values are copied from bulk data parts (PS3.10 §7,
PS3.5 §7.1.2 and §A.4).

``assemble.plan_instance`` decides what the file holds (an ``InstancePlan``); this module writes
it in Explicit VR Little Endian, or with encapsulated pixel data: preamble, 'DICM', File Meta
Information, then the dataset in tag order, where the planned bulk values are copied from their
parts in chunks (never held in memory):

* native values: one element of the parts' bytes concatenated, padded to an even length;
* compressed frames (PS3.5 §A.4): a Basic Offset Table when there is more than one frame and
  the offsets fit in 32 bits, then one fragment per frame, then the Sequence Delimiter;
* a video stream (PS3.5 §8.2.5): one frame, cut into fragments of ``VIDEO_FRAGMENT_BYTES``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import write_data_element, write_file_meta_info

from tessera_common.errors import FailureReason

from .analysis import InstanceRejectedError

VIDEO_TRANSFER_SYNTAXES = frozenset(f"1.2.840.10008.1.2.4.{n}" for n in range(100, 109))
#: Fragments of a video stream are cut at this size (PS3.5 §8.2.5 allows any even length).
VIDEO_FRAGMENT_BYTES = 64 * 1024 * 1024
COPY_CHUNK = 1024 * 1024


@dataclass(slots=True)
class StreamedValue:
    """A top-level bulk value copied from its parts while the file is written."""

    tag: int
    vr: str
    parts: list[int]
    sizes: list[int]
    encapsulated: bool = False


@dataclass(slots=True)
class InstancePlan:
    """What ``write_instance`` writes: the dataset without its streamed values, and those."""

    dataset: Dataset
    file_meta: FileMetaDataset
    streamed: dict[int, StreamedValue]
    referenced: set[int] = field(default_factory=set)
    original_attributes: list[dict[str, Any]] | None = None


def write_instance(
    plan: InstancePlan, out: BinaryIO, open_part: Callable[[int], IO[bytes]]
) -> None:
    """Write the PS3.10 file of ``plan`` to ``out`` (Explicit VR Little Endian dataset,
    preamble, 'DICM', File Meta Information; PS3.10 §7.1), copying streamed values from the
    parts ``open_part`` opens."""
    fp = DicomFileLike(out)
    fp.is_little_endian, fp.is_implicit_VR = True, False
    out.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(fp, plan.file_meta, enforce_standard=True)
    encodings = plan.dataset.get("SpecificCharacterSet") or "iso8859"
    for tag in sorted({int(element.tag) for element in plan.dataset} | set(plan.streamed)):
        value = plan.streamed.get(tag)
        if value is None:
            write_data_element(fp, plan.dataset[tag], encodings)
        elif value.encapsulated:
            _write_encapsulated(out, value, plan.file_meta.TransferSyntaxUID, open_part)
        else:
            _write_native(out, value, open_part)


def _element_header(tag: int, vr: str, length: int) -> bytes:
    return struct.pack("<HH2sHL", tag >> 16, tag & 0xFFFF, vr.encode("ascii"), 0, length)


def _item(length: int) -> bytes:
    return struct.pack("<HHL", 0xFFFE, 0xE000, length)


def _copy(source: IO[bytes], out: BinaryIO, limit: int) -> int:
    copied = 0
    while copied < limit and (chunk := source.read(min(COPY_CHUNK, limit - copied))):
        out.write(chunk)
        copied += len(chunk)
    if copied != limit:
        raise InstanceRejectedError(
            FailureReason.CANNOT_UNDERSTAND, "a bulk data part ended before its recorded size"
        )
    return copied


def _write_native(
    out: BinaryIO, value: StreamedValue, open_part: Callable[[int], IO[bytes]]
) -> None:
    total = sum(value.sizes)
    out.write(_element_header(value.tag, value.vr, total + total % 2))
    for index, size in zip(value.parts, value.sizes, strict=True):
        with open_part(index) as source:
            _copy(source, out, size)
    if total % 2:
        out.write(b"\0")


def _write_encapsulated(
    out: BinaryIO, value: StreamedValue, syntax: str, open_part: Callable[[int], IO[bytes]]
) -> None:
    """Encapsulated pixel data (PS3.5 §A.4): a Basic Offset Table when there is more than one
    frame and the offsets fit in 32 bits, then the fragments, then the sequence delimiter."""
    frames: list[list[int]] = []  # fragment lengths of each frame
    for size in value.sizes:
        step = VIDEO_FRAGMENT_BYTES if syntax in VIDEO_TRANSFER_SYNTAXES else size
        frames.append([min(step, size - start) for start in range(0, size, step)])
    offsets, position = [], 0
    for fragments in frames:
        offsets.append(position)
        position += sum(8 + length + length % 2 for length in fragments)
    table = (
        b""
        if len(frames) < 2 or position > 0xFFFFFFFF
        else struct.pack(f"<{len(offsets)}L", *offsets)
    )
    out.write(_element_header(value.tag, "OB", 0xFFFFFFFF))
    out.write(_item(len(table)) + table)
    for index, fragments in zip(value.parts, frames, strict=True):
        with open_part(index) as source:
            for length in fragments:
                out.write(_item(length + length % 2))
                _copy(source, out, length)
                if length % 2:
                    out.write(b"\0")
    out.write(struct.pack("<HHL", 0xFFFE, 0xE0DD, 0))
