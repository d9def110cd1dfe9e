"""An LRU cache of frame indexes, read from the sidecars of stored instances.

The frame index of an instance (where each frame's bytes lie, PS3.5 §A.4) lives in its sidecar
(the store's ``InstanceRecord``). It is cached by (sidecar key, SHA-256), so the cache can
never serve the index of bytes that were replaced: a re-stored instance has another digest in
the query service's locate answer. The gateway (frames, rendered) and the render service use it.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

import orjson

from .blobstore import BlobNotFoundError, BlobStore
from .errors import ErrorCode, TesseraError
from .messages import FrameIndex, InstanceLocation

#: Sidecars larger than this are parsed off the event loop.
INLINE_PARSE_BYTES = 256 * 1024


class FrameIndexes:
    """Frame indexes by instance, the ``capacity`` most recently used kept in memory."""

    def __init__(self, blobs: BlobStore, capacity: int = 4096) -> None:
        self._blobs = blobs
        self._capacity = capacity
        self._entries: OrderedDict[tuple[str, str], FrameIndex | None] = OrderedDict()

    async def get(self, instance: InstanceLocation) -> FrameIndex | None:
        """The instance's frame index; None when it has no pixel data or none could be made
        (Deflated objects, PS3.5 §A.5, are indexed by the codec instead)."""
        key = (instance.sidecar_key, instance.sha256)
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        try:
            raw = await self._blobs.get(instance.sidecar_key)
        except BlobNotFoundError as exc:
            raise TesseraError(
                ErrorCode.NOT_FOUND, f"instance {instance.sop_uid} is no longer stored"
            ) from exc
        if len(raw) > INLINE_PARSE_BYTES:
            record = await asyncio.to_thread(orjson.loads, raw)
        else:
            record = orjson.loads(raw)
        if not isinstance(record, dict) or record.get("sha256", instance.sha256) != instance.sha256:
            raise TesseraError(ErrorCode.NOT_FOUND, "the instance was replaced; retry")
        frames = record.get("frames")
        index = FrameIndex.model_validate(frames) if frames else None
        self._entries[key] = index
        if len(self._entries) > self._capacity:
            self._entries.popitem(last=False)
        return index
