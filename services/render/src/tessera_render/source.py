"""Reading the frames to render from a stored instance (runs in a render thread).

The instance's header is read up to its Pixel Data and the frames' bytes by their byte ranges
(the frame index from the sidecar), then decoded by the codec's decoders — the same pixels
WADO-RS serves and ``pydicom`` shows. Nothing else of the object is read. Headers are kept
in a small LRU by SHA-256 of the stored bytes (never stale), so rendering another frame or
window of an instance parses nothing.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from pydicom.dataset import Dataset

from tessera_codec.pixels import ConversionError, PixelDescription
from tessera_codec.transcode import PixelSource, Source
from tessera_common.blobstore import BlobStore
from tessera_common.frame_indexes import FrameIndexes
from tessera_common.messages import FrameIndex, RenderRequest

from .pipeline import RenderError, can_render, render_frames

__all__ = ["FrameIndexes", "Headers", "render_stored"]


@dataclass(frozen=True, slots=True)
class _Header:
    dataset: Dataset
    description: PixelDescription
    pixel_tag: int


class Headers:
    """Parsed headers of recently rendered instances, by SHA-256 (thread-safe)."""

    def __init__(self, capacity: int = 512) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[str, _Header] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, sha256: str) -> _Header | None:
        with self._lock:
            header = self._entries.get(sha256)
            if header is not None:
                self._entries.move_to_end(sha256)
            return header

    def put(self, sha256: str, header: _Header) -> None:
        with self._lock:
            self._entries[sha256] = header
            if len(self._entries) > self._capacity:
                self._entries.popitem(last=False)


def render_stored(
    blobs: BlobStore, headers: Headers, request: RenderRequest, frames: FrameIndex | None
) -> bytes:
    """The rendered image of ``request``: read, decode and render its frames."""
    instance = request.instance
    source = Source(
        object_key=instance.object_key,
        size=instance.size,
        transfer_syntax_uid=instance.transfer_syntax_uid,
        frames=frames,
    )
    with blobs.open_reader(instance.object_key, size=instance.size) as fp:
        known = headers.get(instance.sha256)
        if known is not None:
            pixels = PixelSource(
                fp, source, known.dataset, known.description, pixel_tag=known.pixel_tag
            )
        else:
            pixels = PixelSource.open(fp, source)
            if pixels.in_memory is None and pixels.description is not None:
                header = _Header(pixels.header, pixels.description, pixels.pixel_tag)
                headers.put(instance.sha256, header)
        description = pixels.description
        if description is None:
            raise RenderError("the instance has no pixel data to render")
        reason = can_render(pixels.header)
        if reason is not None:
            raise RenderError(reason)
        count = description.number_of_frames
        decoded = []
        for number in request.frames:
            if not 1 <= number <= count:
                raise ConversionError(f"frame {number} does not exist: the instance has {count}")
            array, frame_description = pixels.decode(number - 1)
            decoded.append((number, array, frame_description))
    return render_frames(pixels.header, decoded, request.params)
