"""Where the codec put the frames it transcoded, remembered by the gateway, so that a frame
asked for again in another syntax (OHIF's default ``application/octet-stream`` for a
compressed study, say) is read straight from the codec's copy without a ``codec.transcode``
round trip.

Derived objects are named by the SHA-256 of the stored bytes (``derived/{sha256}/…``) and
never change: an entry stays right for as long as the object exists, and it is removed only
with the instance (whose location the gateway has then forgotten, see ``locations``). A read
that finds the object gone all the same drops the entry and asks the codec again.
"""

from __future__ import annotations

from aiohttp import web

from tessera_common.lru import Lru
from tessera_common.messages import FrameLocation

#: (SHA-256 of the stored bytes, target transfer syntax UID, frame number)
FrameKey = tuple[str, str, int]


class TranscodedFrames(Lru[FrameKey, FrameLocation]):
    """A bounded LRU of ``FrameLocation`` by ``FrameKey``."""

    def __init__(self, capacity: int = 50_000) -> None:
        super().__init__(capacity)

    def forget(self, key: FrameKey) -> None:
        self.pop(key)


TRANSCODED = web.AppKey("transcoded_frames", TranscodedFrames)
