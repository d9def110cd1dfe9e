"""The gateway's port to the codec service (STYLE: ports are Protocols).

``Codec`` is what WADO needs: the capabilities for negotiation and transcodes that return
references to derived objects. ``BusCodec`` implements it over NATS; it caches the
capabilities (refreshed every ``CAPABILITIES_TTL`` seconds, and at once when a codec service
announces itself on ``codec.announce``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol

from tessera_common.bus import Bus
from tessera_common.errors import TesseraError
from tessera_common.messages import (
    CodecCapabilities,
    CodecSubject,
    LocatedInstance,
    Ping,
    TranscodeReply,
    TranscodeRequest,
)

from .transfer_syntax import Capabilities

CAPABILITIES_TTL = 30.0
#: After the codec service did not answer, ask again no sooner than this.
UNKNOWN_TTL = 5.0
CAPABILITIES_TIMEOUT = 2.0
#: A whole-instance transcode of a large multi-frame object takes a while.
TRANSCODE_TIMEOUT = 600.0


class Codec(Protocol):
    async def capabilities(self) -> Capabilities: ...

    async def transcode(
        self, instance: LocatedInstance, target: str, frames: list[int] | None = None
    ) -> TranscodeReply: ...


class BusCodec:
    """``Codec`` over the bus (queue group ``codec``)."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._known: Capabilities | None = None
        self._fetched_at = 0.0
        self._unknown_until = 0.0
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        async def on_announce(msg: object) -> None:
            with contextlib.suppress(ValueError):
                self._remember(CodecCapabilities.model_validate_json(msg.data))  # type: ignore[attr-defined]

        await self._bus.client.subscribe(CodecSubject.ANNOUNCE, cb=on_announce)

    def _remember(self, capabilities: CodecCapabilities) -> None:
        self._known = Capabilities(frozenset(capabilities.decode), frozenset(capabilities.encode))
        self._fetched_at = time.monotonic()

    async def capabilities(self) -> Capabilities:
        now = time.monotonic()
        if self._known is not None and now - self._fetched_at < CAPABILITIES_TTL:
            return self._known
        if self._known is None and now < self._unknown_until:
            return Capabilities(None, None)
        async with self._lock:
            if self._known is None or time.monotonic() - self._fetched_at >= CAPABILITIES_TTL:
                try:
                    reply = await self._bus.request(
                        CodecSubject.CAPABILITIES,
                        Ping(),
                        CodecCapabilities,
                        timeout=CAPABILITIES_TIMEOUT,
                    )
                except TesseraError:
                    # Not running (yet): negotiate as if it could do anything; a transcode
                    # then fails with 503, which a client may retry.
                    self._unknown_until = time.monotonic() + UNKNOWN_TTL
                    return self._known or Capabilities(None, None)
                self._remember(reply)
        assert self._known is not None
        return self._known

    async def transcode(
        self, instance: LocatedInstance, target: str, frames: list[int] | None = None
    ) -> TranscodeReply:
        request = TranscodeRequest(
            object_key=instance.object_key,
            sidecar_key=instance.sidecar_key,
            sha256=instance.sha256,
            size=instance.size,
            transfer_syntax_uid=instance.transfer_syntax_uid,
            target_transfer_syntax_uid=target,
            frames=frames,
        )
        return await self._bus.request(
            CodecSubject.TRANSCODE, request, TranscodeReply, timeout=TRANSCODE_TIMEOUT
        )
