"""Transcoding jobs: read a stored instance, decode its frames, encode them anew.

Runs in the codec's worker processes (ARCHITECTURE invariant 7: CPU work never blocks an
event loop). The stored object is read through a seekable ranged reader; frames are found with
the store's frame index (PS3.5 §A.4) and handled one at a time, so memory holds one frame,
never the instance (invariant 5) — except for Deflated files (PS3.5 §A.5), which must be
inflated to be read, and for encapsulated data whose frame boundaries the store could not
determine without decoding.
"""

from __future__ import annotations

import logging
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO, cast

import numpy as np
import pydicom.config
from pydicom import dcmread, uid
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames

from tessera_common.blobstore import BlobStore, open_blob_store
from tessera_common.messages import FrameIndex
from tessera_common.settings import Settings
from tessera_common.workers import exit_with_parent

from . import plugins
from .pixels import (
    NATIVE_SYNTAXES,
    ConversionError,
    PixelDescription,
    can_decode,
    decode_frame,
    encode_frame,
)
from .writer import PIXEL_DATA, EncodedFrames, prepare_header, write_instance

_LOSSY_SOURCES = frozenset(
    {
        uid.JPEGBaseline8Bit,
        uid.JPEGExtended12Bit,
        "1.2.840.10008.1.2.4.55",
        uid.JPEGLSNearLossless,
        uid.JPEG2000,
        uid.HTJ2K,
    }
)
_PIXEL_KEYWORDS = {
    0x7FE00010: "PixelData",
    0x7FE00008: "FloatPixelData",
    0x7FE00009: "DoubleFloatPixelData",
}
_PIXEL_TAGS = frozenset(_PIXEL_KEYWORDS)


@dataclass(frozen=True, slots=True)
class Source:
    """A stored instance as the codec reads it."""

    object_key: str
    size: int
    transfer_syntax_uid: str
    frames: FrameIndex | None


@dataclass
class _Worker:
    blobs: BlobStore | None = None


#: Per-process state of a worker (set by ``init_worker``, the pool's initializer).
_WORKER = _Worker()


def init_worker(settings_json: str) -> None:
    """Pool initializer: one blob store per worker process, pydicom quiet (its warnings can
    quote attribute values, invariant 10), the extra decoding plugins registered, and an exit
    when the service dies."""
    exit_with_parent()
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore")
    plugins.register()
    _WORKER.blobs = open_blob_store(Settings.model_validate_json(settings_json))


def warm_up() -> bool:
    """A no-op job: starting a worker imports numpy and the codecs (about a second)."""
    return _WORKER.blobs is not None


def _blobs() -> BlobStore:
    if _WORKER.blobs is None:
        raise RuntimeError("init_worker was not called in this process")
    return _WORKER.blobs


def transcode_instance_job(source: Source, target: str, out_path: str) -> FrameIndex | None:
    """Worker entry point: write ``source`` transcoded to ``target`` at ``out_path``."""
    with (
        _blobs().open_reader(source.object_key, size=source.size) as fp,
        open(out_path, "wb") as out,
    ):
        return transcode_instance(fp, source, target, out)


def transcode_frames_job(
    source: Source, target: str, numbers: list[int], out_dir: str
) -> list[tuple[int, str, int]]:
    """Worker entry point: encode frames ``numbers`` (1-based) alone, one file each in
    ``out_dir``; returns (number, path, size) per frame."""
    written = []
    with _blobs().open_reader(source.object_key, size=source.size) as fp:
        for number, data in transcode_frames(fp, source, target, numbers):
            path = Path(out_dir) / f"frame-{number}"
            path.write_bytes(data)
            written.append((number, str(path), len(data)))
    return written


# --- the work, on any seekable binary file ----------------------------------------------------


def transcode_instance(
    fp: IO[bytes], source: Source, target: str, out: BinaryIO
) -> FrameIndex | None:
    """Transcode the PS3.10 file in ``fp`` to ``target``, writing the result to ``out``."""
    pixels = PixelSource.open(fp, source)
    frames: EncodedFrames | None = None
    try:
        if pixels.description is not None:
            frames = EncodedFrames()
            for index in range(pixels.description.number_of_frames):
                array, decoded = pixels.decode(index)
                if decoded.bits_allocated == 1 and target in (
                    uid.ExplicitVRLittleEndian,
                    uid.ImplicitVRLittleEndian,
                ):
                    frames.add_bits(array, decoded)
                    continue
                data, encoded = encode_frame(array, decoded, target)
                frames.add(data, encoded)
            frames.finish_bits()
        header = prepare_header(
            pixels.header,
            target,
            frames.description if frames else None,
            source_lossy=source.transfer_syntax_uid in _LOSSY_SOURCES,
        )
        return write_instance(out, header, target, frames, pixel_tag=pixels.pixel_tag)
    finally:
        if frames is not None:
            frames.close()


def transcode_frames(
    fp: IO[bytes], source: Source, target: str, numbers: list[int]
) -> Iterator[tuple[int, bytes]]:
    """Frames ``numbers`` (1-based) of the file in ``fp``, each encoded in ``target``."""
    pixels = PixelSource.open(fp, source)
    if pixels.description is None:
        raise ConversionError("the instance has no pixel data")
    count = pixels.description.number_of_frames
    for number in numbers:
        if not 1 <= number <= count:
            raise ConversionError(f"frame {number} does not exist: the instance has {count}")
        array, decoded = pixels.decode(number - 1)
        data, _ = encode_frame(array, decoded, target)
        yield number, data


@dataclass
class PixelSource:
    """Access to one stored instance's header and to its frames, one at a time."""

    fp: IO[bytes]
    source: Source
    header: Dataset
    description: PixelDescription | None
    pixel_tag: int = PIXEL_DATA
    in_memory: Dataset | None = None
    _whole: bytes | None = None
    _frames: list[bytes] | None = field(default=None)

    @classmethod
    def open(cls, fp: IO[bytes], source: Source) -> PixelSource:
        ts = source.transfer_syntax_uid
        if not can_decode(ts):
            raise ConversionError(f"Tessera cannot decode transfer syntax {ts}")
        deflated = ts == uid.DeflatedExplicitVRLittleEndian
        index = source.frames
        # Deflated data must be inflated to be read; without a frame index (no pixel data, or
        # data the store could not index) or a frame mapping, pydicom reads the whole file.
        unmapped = index is None or (index.encapsulated and not index.frames)
        if deflated or unmapped:
            full = dcmread(cast(BinaryIO, fp))
            header = full.copy()
            present = [tag for tag in _PIXEL_TAGS if tag in full]
            pixels = cls(fp, source, header, None, in_memory=full)
            if present:
                pixels.pixel_tag = present[0]
                pixels.description = PixelDescription.from_dataset(
                    full, _PIXEL_KEYWORDS[pixels.pixel_tag], str(full[pixels.pixel_tag].VR)
                )
            return pixels
        header = dcmread(cast(BinaryIO, fp), stop_before_pixels=True)
        pixels = cls(fp, source, header, None)
        if index is not None:
            vr = "OB"
            if not index.encapsulated:
                pixels.pixel_tag, vr = _native_pixel_element(fp, index, ts)
            pixels.description = PixelDescription.from_dataset(
                header, _PIXEL_KEYWORDS[pixels.pixel_tag], vr
            )
        return pixels

    def decode(self, index: int) -> tuple[np.ndarray, PixelDescription]:
        assert self.description is not None
        ts = self.source.transfer_syntax_uid
        data, whole_index = self._frame_bytes(index)
        return decode_frame(data, ts, self.description, index=whole_index)

    def _frame_bytes(self, index: int) -> tuple[bytes, int | None]:
        """One frame's bytes, or all native frames and the index to decode from them."""
        description = self.description
        assert description is not None
        if self.in_memory is not None:
            value = bytes(self.in_memory[self.pixel_tag].value)
            if self.source.transfer_syntax_uid in NATIVE_SYNTAXES:
                return value, index
            if self._frames is None:
                self._frames = list(
                    generate_frames(value, number_of_frames=description.number_of_frames)
                )
            return self._frames[index], None
        frames = self.source.frames
        assert frames is not None
        if not frames.encapsulated:
            # Big endian frames are read whole: pydicom swaps 8-bit OW data by 16-bit words,
            # which a frame of odd length would break (PS3.5 §A.3: retired, rare).
            by_frame = self.source.transfer_syntax_uid != uid.ExplicitVRBigEndian
            if by_frame and frames.frame_length is not None and frames.data_offset is not None:
                self.fp.seek(frames.data_offset + index * frames.frame_length)
                return _read_exactly(self.fp, frames.frame_length), None
            if self._whole is None:
                self.fp.seek(frames.data_offset or 0)
                self._whole = _read_exactly(self.fp, frames.data_length or 0)
            return self._whole, index
        first, count = frames.frames[index]
        parts = []
        for offset, length in frames.fragments[first : first + count]:
            self.fp.seek(offset)
            parts.append(_read_exactly(self.fp, length))
        return b"".join(parts), None


def _native_pixel_element(
    fp: IO[bytes], index: FrameIndex, transfer_syntax_uid: str
) -> tuple[int, str]:
    """The tag and VR of the element holding the native value (its header ends at
    ``data_offset``: 12 bytes in Explicit VR for OB/OW/OF/OD, 8 in Implicit VR, PS3.5 §7.1)."""
    endian = ">" if transfer_syntax_uid == uid.ExplicitVRBigEndian else "<"
    offset = index.data_offset or 0
    if transfer_syntax_uid != uid.ImplicitVRLittleEndian and offset >= 12:
        fp.seek(offset - 12)
        raw = _read_exactly(fp, 12)
        group, element = struct.unpack(f"{endian}HH", raw[:4])
        if group << 16 | element in _PIXEL_TAGS:
            return group << 16 | element, raw[4:6].decode("latin-1")
    fp.seek(max(offset - 8, 0))
    group, element = struct.unpack(f"{endian}HH", _read_exactly(fp, 4))
    tag = group << 16 | element
    return (tag if tag in _PIXEL_TAGS else PIXEL_DATA), "OW"


def _read_exactly(fp: IO[bytes], length: int) -> bytes:
    data = fp.read(length)
    if len(data) != length:
        raise ConversionError("the stored object is shorter than its frame index says")
    return data
