"""WADO-RS bulk data and pixel data resources (PS3.18 §10.4.1.1.4, §10.4.1.1.6).

``…/instances/{i}/bulkdata/{tag path}`` resolves the BulkDataURIs of ``/metadata``: the value's
byte range in the stored object is found by a header parse over ranged reads
(``element_ranges``, cached per stored object and path) and streamed from object storage.
Pixel data (``…/pixeldata``, and the BulkDataURI of (7FE0,0010)) comes from the frame index.
Deflated and Big Endian objects have no little-endian byte ranges to serve: their values come
from the codec's Explicit VR Little Endian copy.

Single-part responses (``Accept: application/octet-stream``, ``application/pdf``, ``video/mp4``)
honour HTTP ``Range`` (RFC 9110 §14; 206 Partial Content, 416 when the range starts past the
end); a multipart response applies the range to its one part.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from aiohttp import web

from tessera_common.errors import ErrorCode, TesseraError
from tessera_common.messages import LocatedInstance

from .context import BLOBS
from .element_ranges import (
    ElementNotFoundError,
    ElementRange,
    TagPathError,
    locate_element,
    parse_tag_path,
)
from .frames import retrieve_bulk, video_fragments, video_plan
from .instances import (
    CODEC,
    FRAME_INDEXES,
    MultipartWriter,
    accept_items,
    locate_all,
    locate_instance,
    locate_request,
    stream_object,
)
from .ranges import ByteRange, RangeNotSatisfiableError, parse_range
from .transfer_syntax import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    OCTET_STREAM,
    Wish,
    frames_label,
    is_video,
    wishes,
)

#: Stored objects whose bytes are not little-endian values: served from the codec's copy.
_NOT_LITTLE_ENDIAN = frozenset({DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN})
_ELEMENT_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class Value:
    """Bytes to serve: ``ranges`` of object ``key`` (several for a fragmented stream)."""

    key: str
    ranges: tuple[tuple[int, int], ...]
    media_type: str
    transfer_syntax: str | None = None

    @property
    def size(self) -> int:
        return sum(length for _, length in self.ranges)

    def content_type(self) -> str:
        if self.transfer_syntax:
            return f"{self.media_type}; transfer-syntax={self.transfer_syntax}"
        return self.media_type


class ElementRanges:
    """LRU cache of located elements, by (object key, SHA-256, tag path)."""

    def __init__(self, capacity: int = _ELEMENT_CACHE_SIZE) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[tuple[str, str, str], ElementRange] = OrderedDict()

    def get(self, key: tuple[str, str, str]) -> ElementRange | None:
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        return found

    def put(self, key: tuple[str, str, str], value: ElementRange) -> None:
        self._entries[key] = value
        if len(self._entries) > self._capacity:
            self._entries.popitem(last=False)


ELEMENT_RANGES = web.AppKey("element_ranges", ElementRanges)


def _bulk_wishes(request: web.Request) -> list[Wish]:
    wanted = wishes(accept_items(request), bulk_only=True)
    if not wanted:
        raise TesseraError(
            ErrorCode.NOT_ACCEPTABLE,
            "bulk data is available as application/octet-stream (single part or "
            'multipart/related; type="application/octet-stream"), pixel data also in its '
            "compressed media type",
        )
    return wanted


async def retrieve_bulkdata(request: web.Request) -> web.StreamResponse:
    """``…/instances/{i}/bulkdata/{tag path}``: one BulkDataURI."""
    try:
        path = parse_tag_path(request.match_info["path"])
    except TagPathError as exc:
        raise TesseraError(ErrorCode.BAD_REQUEST, str(exc)) from exc
    if path.top_level_pixel_data:
        return await retrieve_pixeldata(request)
    wanted = _bulk_wishes(request)
    instance = await locate_instance(request)
    key, sha = await _little_endian_object(request, instance)
    cache = request.app[ELEMENT_RANGES]
    cache_key = (key, sha, str(path))
    element = cache.get(cache_key)
    if element is None:
        blobs = request.app[BLOBS]

        def locate() -> ElementRange:
            with blobs.open_reader(key) as fp:
                return locate_element(fp, path)

        try:
            element = await asyncio.to_thread(locate)
        except ElementNotFoundError as exc:
            raise TesseraError(
                ErrorCode.NOT_FOUND, f"no bulk data {path} in instance {instance.sop_uid}: {exc}"
            ) from exc
        cache.put(cache_key, element)
    media_types = [OCTET_STREAM]
    if element.media_type:
        media_types.insert(0, element.media_type)
    wish, media_type = _choose(wanted, media_types)
    value = Value(key, ((element.offset, element.length),), media_type)
    return await send_value(request, value, multipart=wish.multipart)


async def retrieve_pixeldata(request: web.Request) -> web.StreamResponse:
    """``…/pixeldata`` (and the BulkDataURI of the Pixel Data element). A single-part
    ``Accept`` gets the whole value (native) or the stream (video), with Range; multipart gets
    one part per frame, like bulk data retrieval of the instance (``frames``)."""
    wanted = _bulk_wishes(request)
    if "instance" not in request.match_info:
        return await retrieve_bulk(request, locate_all(request, locate_request(request)), wanted)
    instance = await locate_instance(request)
    index = await request.app[FRAME_INDEXES].get(instance)
    ts = instance.transfer_syntax_uid
    if is_video(ts):
        plan = video_plan(instance, index, wanted)
        value = Value(instance.object_key, tuple(video_fragments(instance, index)), plan.media_type)
        return await send_value(request, value, multipart=plan.multipart)
    if wanted[0].multipart:

        async def one() -> AsyncIterator[LocatedInstance]:
            yield instance

        return await retrieve_bulk(request, one(), wanted)
    # A single body: the native value as little-endian bytes (PS3.18 Table 8.7.3-5).
    wish, media_type = _choose(wanted, [OCTET_STREAM])
    if wish.transfer_syntax not in (None, "*", EXPLICIT_VR_LITTLE_ENDIAN):
        raise TesseraError(
            ErrorCode.NOT_ACCEPTABLE,
            "single-part pixel data is sent as application/octet-stream in Explicit VR Little "
            "Endian; ask for multipart/related for frames in other syntaxes",
        )
    if index is not None and not index.encapsulated and ts not in _NOT_LITTLE_ENDIAN:
        assert index.data_offset is not None and index.data_length is not None
        value = Value(
            instance.object_key,
            ((index.data_offset, index.data_length),),
            media_type,
            frames_label(ts),
        )
        return await send_value(request, value, multipart=False)
    if index is None and ts != DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        raise TesseraError(ErrorCode.NOT_FOUND, f"instance {instance.sop_uid} has no pixel data")
    reply = await request.app[CODEC].transcode(instance, EXPLICIT_VR_LITTLE_ENDIAN)
    derived = reply.instance
    if derived is None or derived.frames is None or derived.frames.data_offset is None:
        raise TesseraError(ErrorCode.NOT_FOUND, f"instance {instance.sop_uid} has no pixel data")
    value = Value(
        derived.object_key,
        ((derived.frames.data_offset, derived.frames.data_length or 0),),
        media_type,
        EXPLICIT_VR_LITTLE_ENDIAN,
    )
    return await send_value(request, value, multipart=False)


def _choose(wanted: Sequence[Wish], media_types: Sequence[str]) -> tuple[Wish, str]:
    for wish in wanted:
        for media_type in media_types:
            top = media_type.split("/")[0]
            if wish.media_range in ("*/*", f"{top}/*", media_type.lower()):
                return wish, media_type
    raise TesseraError(
        ErrorCode.NOT_ACCEPTABLE, f"this bulk data is available as {' or '.join(media_types)}"
    )


async def _little_endian_object(request: web.Request, instance: LocatedInstance) -> tuple[str, str]:
    """The object whose bytes hold the instance's values little-endian: the stored one, or
    the codec's Explicit VR Little Endian copy (keyed by the stored SHA-256)."""
    if instance.transfer_syntax_uid not in _NOT_LITTLE_ENDIAN:
        return instance.object_key, instance.sha256
    reply = await request.app[CODEC].transcode(instance, EXPLICIT_VR_LITTLE_ENDIAN)
    if reply.instance is None:
        raise TesseraError(ErrorCode.INTERNAL, "the codec service sent no derived object")
    return reply.instance.object_key, instance.sha256


async def send_value(request: web.Request, value: Value, *, multipart: bool) -> web.StreamResponse:
    """Stream ``value`` whole or the part ``Range`` asks for."""
    size = value.size
    try:
        wanted = parse_range(request.headers.get("Range"), size)
    except RangeNotSatisfiableError:
        return web.Response(
            status=416,
            headers={"Content-Range": f"bytes */{size}"},
            text=f"the range starts beyond the {size}-byte value",
        )
    part = wanted or ByteRange(0, size)
    status = 206 if wanted is not None else 200
    response = web.StreamResponse(status=status, headers={"Accept-Ranges": "bytes"})
    writer: MultipartWriter | None = None
    if multipart:
        writer = MultipartWriter(response)
        response.headers["Content-Type"] = writer.content_type(value.media_type, writer.boundary)
        response.enable_chunked_encoding()
    else:
        response.headers["Content-Type"] = value.content_type()
        response.content_length = part.length
        if wanted is not None:
            response.headers["Content-Range"] = part.content_range(size)
    await response.prepare(request)
    if writer is not None:
        headers: list[tuple[str, object]] = [
            ("Content-Type", value.content_type()),
            ("Content-Location", str(request.url.with_query(None))),
            ("Content-Length", part.length),
        ]
        if wanted is not None:
            headers.append(("Content-Range", part.content_range(size)))
        await writer.start_part(headers)
    blobs = request.app[BLOBS]
    position = 0
    for offset, length in value.ranges:
        start, end = max(part.start - position, 0), min(part.end - position, length)
        position += length
        if start >= end:
            continue
        async for chunk in stream_object(blobs, value.key, offset + start, offset + end):
            await response.write(chunk)
    if writer is not None:
        await writer.close()
    else:
        await response.write_eof()
    return response


__all__ = ["ELEMENT_RANGES", "ElementRanges", "retrieve_bulkdata", "retrieve_pixeldata"]
