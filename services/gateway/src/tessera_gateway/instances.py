"""What the WADO modules share: finding stored instances, their frame indexes, frame bytes,
the ``Accept`` wishes of a request, and writing ``multipart/related`` responses.

Frame indexes come from ``tessera_common.frame_indexes`` (an LRU over the sidecars).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any

from aiohttp import web

from tessera_common.blobstore import BlobStore, LocalBlobs
from tessera_common.errors import ErrorCode, TesseraError
from tessera_common.frame_indexes import FrameIndexes
from tessera_common.messages import (
    FrameIndex,
    LocatedInstance,
    LocateReply,
    LocateRequest,
    Subject,
)

from .codec_client import Codec
from .context import BLOBS, BUS, optional_path_uid, path_uid
from .locations import LOCATIONS
from .negotiation import AcceptItem, parse_accept

log = logging.getLogger(__name__)

CODEC = web.AppKey("codec", Codec)
#: Objects are streamed in ranged reads of this size, the next one read while one is sent:
#: bounded memory (two pieces per response) and, on a local store, about ten times the
#: throughput of obstore's chunked stream.
STREAM_PIECE = 4 * 1024 * 1024


def accept_items(request: web.Request) -> list[AcceptItem]:
    """The ``Accept`` header, or the ``accept`` query parameter, which takes precedence
    (PS3.18 §8.3.3.1)."""
    accept_param = request.query.getall("accept", [])
    if accept_param:
        return parse_accept(", ".join(accept_param))
    return parse_accept(request.headers.get("Accept"))


def locate_request(request: web.Request) -> LocateRequest:
    return LocateRequest(
        study_uid=path_uid(request, "study"),
        series_uid=optional_path_uid(request, "series"),
        sop_uid=optional_path_uid(request, "instance"),
    )


async def locate_all(request: web.Request, locate: LocateRequest) -> AsyncIterator[LocatedInstance]:
    """Every instance of a study, series or instance, page by page (404 if none)."""
    bus = request.app[BUS]
    offset: int | None = 0
    while offset is not None:
        reply = await bus.request(
            Subject.QUERY_LOCATE, locate.model_copy(update={"offset": offset}), LocateReply
        )
        for instance in reply.instances:
            yield instance
        offset = reply.next_offset


async def locate_list(request: web.Request, locate: LocateRequest) -> list[LocatedInstance]:
    return [instance async for instance in locate_all(request, locate)]


async def locate_instance(request: web.Request) -> LocatedInstance:
    """The instance the path names."""
    return await locate_one(request, locate_request(request))


async def locate_one(request: web.Request, locate: LocateRequest) -> LocatedInstance:
    """The instance ``locate`` names (its SOP Instance UID is given), remembered in the
    gateway's ``Locations``."""
    assert locate.sop_uid is not None
    locations = request.app[LOCATIONS]
    known = locations.get(locate.study_uid, locate.series_uid, locate.sop_uid)
    if known is not None and await _still_stored(request.app[BLOBS], known):
        return known
    if known is not None:
        locations.forget([known.sop_uid])
    generation = locations.generation
    async for instance in locate_all(request, locate):
        locations.put(instance, generation)
        return instance
    raise TesseraError(ErrorCode.NOT_FOUND, f"instance {locate.sop_uid} not found")


async def _still_stored(blobs: BlobStore, instance: LocatedInstance) -> bool:
    """On a local store, whether the object at a remembered location still has its size (a
    ``stat``, a few µs): it catches a replacement whose event this gateway has not processed
    yet (see ``locations``). Elsewhere a HEAD would cost a round trip; the events decide."""
    if not isinstance(blobs, LocalBlobs):
        return True
    info = await blobs.head(instance.object_key)
    return info is not None and info.size == instance.size


def instance_path(instance: LocatedInstance) -> str:
    return f"studies/{instance.study_uid}/series/{instance.series_uid}/instances/{instance.sop_uid}"


FRAME_INDEXES = web.AppKey("frame_indexes", FrameIndexes)


def frame_span(index: FrameIndex, number: int) -> list[tuple[int, int]]:
    """The (offset, length) byte ranges that make up frame ``number`` (1-based) in the stored
    object: one range for native data, one per fragment for encapsulated data (PS3.5 §A.4)."""
    if index.encapsulated:
        first, count = index.frames[number - 1]
        return list(index.fragments[first : first + count])
    assert index.data_offset is not None and index.frame_length is not None
    return [(index.data_offset + (number - 1) * index.frame_length, index.frame_length)]


def frames_addressable(index: FrameIndex | None) -> bool:
    """Whether frames can be read by byte range from the stored object."""
    if index is None:
        return False
    if index.encapsulated:
        return len(index.frames) == index.number_of_frames and index.number_of_frames > 0
    return index.frame_length is not None and index.data_offset is not None


async def read_ranges(blobs: BlobStore, key: str, ranges: list[tuple[int, int]]) -> bytes:
    """The bytes of ``ranges`` of ``key``, joined; one ranged read when they are the item
    values of consecutive fragments (8-byte item headers between them)."""
    if len(ranges) == 1:
        offset, length = ranges[0]
        return await blobs.get_range(key, offset, offset + length)
    start, end = ranges[0][0], ranges[-1][0] + ranges[-1][1]
    data = await blobs.get_range(key, start, end)
    return b"".join(data[offset - start : offset - start + length] for offset, length in ranges)


async def stream_object(
    blobs: BlobStore, key: str, start: int, end: int, piece: int = STREAM_PIECE
) -> AsyncIterator[bytes]:
    """Bytes ``start``..``end`` of object ``key``, in ranged reads with one read ahead."""
    if end <= start:
        return
    bounds = [(offset, min(offset + piece, end)) for offset in range(start, end, piece)]
    ahead = asyncio.ensure_future(blobs.get_range(key, *bounds[0]))
    try:
        for following in bounds[1:]:
            data = await ahead
            ahead = asyncio.ensure_future(blobs.get_range(key, *following))
            yield data
        yield await ahead
    finally:
        if not ahead.done():
            ahead.cancel()


#: Values smaller than this are copied; larger ones go by ``sendfile`` when they can.
SENDFILE_MIN = 64 * 1024


async def write_object(
    request: web.Request,
    response: web.StreamResponse,
    blobs: BlobStore,
    key: str,
    start: int,
    end: int,
) -> None:
    """Write bytes ``start``..``end`` of object ``key`` into a chunked response body.

    On the local filesystem the bytes go from the page cache to the socket by ``sendfile``
    (no copy through Python: about twice the throughput of ranged reads), framed as one
    HTTP/1.1 chunk written beside aiohttp's own (RFC 9112 §7.1); elsewhere, or over TLS, they
    are streamed in ranged reads."""
    transport = request.transport
    size = end - start
    if (
        not isinstance(blobs, LocalBlobs)
        or not response.chunked
        or size < SENDFILE_MIN
        or transport is None
        or transport.get_extra_info("sslcontext") is not None
    ):
        async for chunk in stream_object(blobs, key, start, end):
            await response.write(chunk)
        return
    try:
        fp = await asyncio.to_thread(open, blobs.local_path(key), "rb")
    except FileNotFoundError as exc:
        raise TesseraError(ErrorCode.NOT_FOUND, "the object is no longer stored") from exc
    try:
        transport.write(f"{size:x}\r\n".encode("ascii"))
        await asyncio.get_running_loop().sendfile(transport, fp, start, size)
        transport.write(b"\r\n")
    finally:
        fp.close()


class MultipartWriter:
    """Writes a ``multipart/related`` body (RFC 2387; PS3.18 §8.6.1.2) part by part."""

    def __init__(self, response: web.StreamResponse, boundary: str | None = None) -> None:
        self.response = response
        self.boundary = boundary or uuid.uuid4().hex
        self.parts = 0

    @staticmethod
    def content_type(part_type: str, boundary: str, **params: str) -> str:
        extra = "".join(f"; {name}={value}" for name, value in params.items())
        return f'multipart/related; type="{part_type}"; boundary={boundary}{extra}'

    async def start_part(self, headers: Iterable[tuple[str, Any]]) -> None:
        await self.response.write(self._delimiter(headers))
        self.parts += 1

    def _delimiter(self, headers: Iterable[tuple[str, Any]]) -> bytes:
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers)
        return f"\r\n--{self.boundary}\r\n{lines}\r\n".encode()

    async def only_part(
        self, request: web.Request, headers: Iterable[tuple[str, Any]], body: bytes
    ) -> None:
        """The whole body as one part, sent with a ``Content-Length``: no chunk framing, and
        the part is handed to the socket as it is (chunked writes join each chunk with its
        framing first, a copy of the part)."""
        head = self._delimiter(headers)
        tail = f"\r\n--{self.boundary}--\r\n".encode()
        self.response.content_length = len(head) + len(body) + len(tail)
        await self.response.prepare(request)
        await self.response.write(head)
        await self.response.write(body)
        await self.response.write(tail)
        await self.response.write_eof()
        self.parts += 1

    async def write(self, data: bytes) -> None:
        await self.response.write(data)

    async def part(self, headers: Iterable[tuple[str, Any]], body: bytes) -> None:
        await self.start_part(headers)
        await self.response.write(body)

    async def close(self) -> None:
        await self.response.write(f"\r\n--{self.boundary}--\r\n".encode())
        await self.response.write_eof()


def abort(request: web.Request, response: web.StreamResponse, exc: Exception) -> web.StreamResponse:
    """A failure after the response started: the status is sent already, so the connection
    is closed before the body ends. The client sees an incomplete body, never one that looks
    whole (a multipart body without its close delimiter, a ZIP without its central
    directory)."""
    reason = exc.reason if isinstance(exc, TesseraError) else type(exc).__name__
    log.warning("%s stopped mid-response: %s", request.path, reason)
    if request.transport is not None:
        request.transport.close()
    return response
