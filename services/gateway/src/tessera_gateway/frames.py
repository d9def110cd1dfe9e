"""WADO-RS frames (PS3.18 §10.4.1.1.5 ``/frames/{list}``) and bulk data retrieval of study,
series and instance resources.

Frames in the stored syntax are byte ranges of the stored object, found with the frame index
the store computed (native: PS3.5 §8.1.1; encapsulated, single- or multi-fragment, with or
without Basic/Extended Offset Table: PS3.5 §A.4): one ranged read per frame, never a parse of
the instance, so frame 2,000 costs what frame 1 costs. Frames in another syntax come from the
codec service (``codec.transcode`` with frame numbers), which caches what it makes; the gateway
remembers where (``transcoded``), so a frame asked for again is read without asking.

Media types (PS3.18 Table 8.7.3-5): ``application/octet-stream`` (native), ``image/jpeg``,
``image/jls``, ``image/jp2``, ``image/jpx``, ``image/jphc``, ``image/dicom-rle``; a single-part
``Accept`` (``image/jpeg`` rather than ``multipart/related; type="image/jpeg"``) is honoured
for one frame. Video (MPEG-2, H.264, HEVC) has no frames to cut: its stream is served whole by
``/pixeldata`` and by bulk data retrieval, as ``video/mpeg2``, ``video/mp4`` or ``video/H265``.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

from tessera_common.blobstore import BlobNotFoundError
from tessera_common.errors import ErrorCode, TesseraError
from tessera_common.messages import MAX_TRANSCODE_FRAMES, FrameIndex, LocatedInstance

from .ahead import in_order
from .context import BLOBS, service_root
from .instances import (
    CODEC,
    FRAME_INDEXES,
    MultipartWriter,
    abort,
    accept_items,
    frame_span,
    frames_addressable,
    instance_path,
    locate_instance,
    read_ranges,
    stream_object,
)
from .transcoded import TRANSCODED
from .transfer_syntax import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    OCTET_STREAM,
    STORED,
    Plan,
    Wish,
    bulk_plans,
    is_video,
    media_type_of,
    wishes,
)

log = logging.getLogger(__name__)

#: Frames read concurrently ahead of the one being written.
READ_AHEAD = 8
MAX_FRAMES_IN_LIST = 10_000
_FRAME_LIST = re.compile(r"[1-9][0-9]{0,8}(,[1-9][0-9]{0,8})*")
OFFERED = (
    'multipart/related; type="application/octet-stream" (or image/jpeg, image/jls, image/jp2, '
    "image/jpx, image/jphc, image/dicom-rle), with transfer-syntax=* for the stored frames"
)


def parse_frame_list(text: str) -> list[int]:
    """``{frames}`` of PS3.18 §10.4.1.1.5: comma-separated frame numbers, starting at 1."""
    if not _FRAME_LIST.fullmatch(text):
        raise TesseraError(
            ErrorCode.BAD_REQUEST,
            f"invalid frame list {text[:80]!r}: give frame numbers from 1, separated by commas "
            "(PS3.18 §8.3.2)",
        )
    numbers = [int(n) for n in text.split(",")]
    if len(numbers) > MAX_FRAMES_IN_LIST:
        raise TesseraError(
            ErrorCode.BAD_REQUEST, f"at most {MAX_FRAMES_IN_LIST} frames per request"
        )
    return numbers


FrameReader = Callable[[], Awaitable[bytes]]


@dataclass(frozen=True, slots=True)
class FrameSource:
    """How to get the frames of one instance in one representation."""

    plan: Plan
    readers: dict[int, FrameReader]


async def frame_source(
    request: web.Request,
    instance: LocatedInstance,
    index: FrameIndex | None,
    numbers: Sequence[int],
    wanted: Sequence[Wish],
) -> FrameSource:
    """The first plan that works for these frames (406 when none does)."""
    ts = instance.transfer_syntax_uid
    blobs = request.app[BLOBS]
    codec = request.app[CODEC]
    servable = frames_addressable(index) and ts != DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
    plans = bulk_plans(wanted, ts, await codec.capabilities(), stored_servable=servable)
    reasons: list[str] = []
    for plan in plans:
        if not plan.multipart and len(numbers) != 1:
            continue
        if plan.stored:
            assert index is not None

            def stored_reader(number: int) -> FrameReader:
                ranges = frame_span(index, number)
                return lambda: read_ranges(blobs, instance.object_key, ranges)

            return FrameSource(plan, {n: stored_reader(n) for n in set(numbers)})
        try:
            readers = await _transcoded_readers(request, instance, plan.target, numbers)
        except TesseraError as exc:
            if exc.code is ErrorCode.NOT_ACCEPTABLE:
                reasons.append(exc.reason)
                continue
            raise
        return FrameSource(plan, readers)
    because = f": {'; '.join(reasons)}" if reasons else ""
    raise TesseraError(
        ErrorCode.NOT_ACCEPTABLE,
        f"the frames of instance {instance.sop_uid} (stored as {ts}) are not available in "
        f"the media type asked for{because}; offered: {OFFERED}",
    )


async def _transcoded_readers(
    request: web.Request, instance: LocatedInstance, target: str, numbers: Sequence[int]
) -> dict[int, FrameReader]:
    """Readers of the frames in ``target``: from where the codec put them earlier
    (``TranscodedFrames``), else after asking the codec to make them."""
    blobs = request.app[BLOBS]
    codec = request.app[CODEC]
    known = request.app[TRANSCODED]
    unique = sorted(set(numbers))
    found = {n: known.get((instance.sha256, target, n)) for n in unique}
    locations = {n: location for n, location in found.items() if location is not None}
    missing = [n for n in unique if n not in locations]
    for start in range(0, len(missing), MAX_TRANSCODE_FRAMES):
        reply = await codec.transcode(
            instance, target, frames=missing[start : start + MAX_TRANSCODE_FRAMES]
        )
        for location in reply.frames:
            known.put((instance.sha256, target, location.number), location)
            locations[location.number] = location

    async def read(number: int) -> bytes:
        location = locations[number]
        try:
            return await blobs.get_range(
                location.key, location.offset, location.offset + location.length
            )
        except BlobNotFoundError:
            if location is not found.get(number):
                raise  # the codec's own answer: nothing to retry
        known.forget((instance.sha256, target, number))
        reply = await codec.transcode(instance, target, frames=[number])
        fresh = next((f for f in reply.frames if f.number == number), None)
        if fresh is None:
            raise TesseraError(ErrorCode.NOT_FOUND, f"frame {number} could not be transcoded")
        known.put((instance.sha256, target, number), fresh)
        return await blobs.get_range(fresh.key, fresh.offset, fresh.offset + fresh.length)

    return {n: functools.partial(read, n) for n in locations}


def check_frame_numbers(
    instance: LocatedInstance, index: FrameIndex | None, numbers: list[int]
) -> None:
    if index is None:
        if instance.transfer_syntax_uid == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
            return  # the codec knows the frame count of a deflated instance
        raise TesseraError(ErrorCode.NOT_FOUND, f"instance {instance.sop_uid} has no pixel data")
    beyond = [n for n in numbers if n > index.number_of_frames]
    if beyond:
        raise TesseraError(
            ErrorCode.NOT_FOUND,
            f"frame {beyond[0]} does not exist: instance {instance.sop_uid} has "
            f"{index.number_of_frames} frame(s)",
        )


def part_type(plan: Plan) -> str:
    return f"{plan.media_type}; transfer-syntax={plan.label}"


async def retrieve_frames(request: web.Request) -> web.StreamResponse:
    """``/studies/{s}/series/{se}/instances/{i}/frames/{list}``."""
    numbers = parse_frame_list(request.match_info["frames"])
    wanted = wishes(accept_items(request), bulk_only=True)
    if not wanted:
        raise TesseraError(ErrorCode.NOT_ACCEPTABLE, f"frames are available as {OFFERED}")
    instance = await locate_instance(request)
    if is_video(instance.transfer_syntax_uid):
        raise TesseraError(
            ErrorCode.NOT_ACCEPTABLE,
            f"instance {instance.sop_uid} is a video ({media_type_of(instance.transfer_syntax_uid)}"
            "): its frames are not separable; retrieve the stream from .../pixeldata",
        )
    index = await request.app[FRAME_INDEXES].get(instance)
    check_frame_numbers(instance, index, numbers)
    source = await frame_source(request, instance, index, numbers, wanted)
    location = f"{service_root(request)}/{instance_path(instance)}/frames"
    if not source.plan.multipart:
        data = await source.readers[numbers[0]]()
        return web.Response(body=data, headers={"Content-Type": part_type(source.plan)})
    response = web.StreamResponse()
    writer = MultipartWriter(response)
    response.headers["Content-Type"] = writer.content_type(source.plan.media_type, writer.boundary)
    if len(numbers) == 1:  # a viewer's usual request
        data = await source.readers[numbers[0]]()
        await writer.only_part(request, _part_headers(source, location, numbers[0], data), data)
        return response
    response.enable_chunked_encoding()
    await response.prepare(request)
    try:
        async for number, data in in_order(numbers, _reader(source), READ_AHEAD):
            await writer.part(_part_headers(source, location, number, data), data)
    except (TesseraError, OSError, BlobNotFoundError) as exc:
        return abort(request, response, exc)
    await writer.close()
    return response


def _part_headers(
    source: FrameSource, location: str, number: int, data: bytes
) -> list[tuple[str, object]]:
    return [
        ("Content-Type", part_type(source.plan)),
        ("Content-Location", f"{location}/{number}"),
        ("Content-Length", len(data)),
    ]


def _reader(source: FrameSource) -> Callable[[int], Awaitable[bytes]]:
    return lambda number: source.readers[number]()


# --- bulk data of study, series and instance resources ----------------------------------------


async def retrieve_bulk(
    request: web.Request, instances: AsyncIterator[LocatedInstance], wanted: Sequence[Wish]
) -> web.StreamResponse:
    """Study, series or instance retrieve in a bulk data media type (PS3.18 §10.4.1.1.1,
    Table 8.7.3-5): the pixel data of each instance, one part per frame (Content-Location
    ``…/frames/{n}``), or one part with the whole stream for video. Instances without pixel
    data, or whose pixel data is not available in the media types asked for, are left out;
    406 when that leaves nothing."""
    root = service_root(request)
    response: web.StreamResponse | None = None
    writer: MultipartWriter | None = None
    skipped: list[str] = []
    async for instance in instances:
        try:
            plan, parts = await _instance_parts(request, instance, wanted)
        except TesseraError as exc:
            if exc.code not in (ErrorCode.NOT_ACCEPTABLE, ErrorCode.NOT_FOUND):
                if response is None:
                    raise
                return abort(request, response, exc)
            skipped.append(exc.reason)
            continue
        if writer is None:
            response = web.StreamResponse()
            writer = MultipartWriter(response)
            # The type parameter names the media type of the first part; parts state theirs.
            response.headers["Content-Type"] = writer.content_type(plan.media_type, writer.boundary)
            response.enable_chunked_encoding()
            await response.prepare(request)
        try:
            async for suffix, size, chunks in parts:
                await writer.start_part(
                    [
                        ("Content-Type", part_type(plan)),
                        ("Content-Location", f"{root}/{instance_path(instance)}/{suffix}"),
                        ("Content-Length", size),
                    ]
                )
                async for chunk in chunks:
                    await writer.write(chunk)
        except (TesseraError, OSError) as exc:
            assert response is not None
            return abort(request, response, exc)
    if writer is None or response is None:
        reason = skipped[0] if skipped else "no instance has pixel data"
        raise TesseraError(ErrorCode.NOT_ACCEPTABLE, f"no bulk data to send: {reason}")
    await writer.close()
    return response


Part = tuple[str, int, AsyncIterator[bytes]]
"""A part of a bulk data response: Content-Location suffix, size, and its bytes."""


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _instance_parts(
    request: web.Request, instance: LocatedInstance, wanted: Sequence[Wish]
) -> tuple[Plan, AsyncIterator[Part]]:
    index = await request.app[FRAME_INDEXES].get(instance)
    ts = instance.transfer_syntax_uid
    if is_video(ts):
        plan = video_plan(instance, index, wanted)
        return plan, _video_parts(request, instance, index)
    if index is None and ts != DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        raise TesseraError(ErrorCode.NOT_FOUND, f"instance {instance.sop_uid} has no pixel data")
    if index is None:
        # A deflated instance: its frame count comes with the codec's derived object.
        reply = await request.app[CODEC].transcode(instance, EXPLICIT_VR_LITTLE_ENDIAN)
        index = reply.instance.frames if reply.instance else None
        if index is None:
            raise TesseraError(
                ErrorCode.NOT_FOUND, f"instance {instance.sop_uid} has no pixel data"
            )
    numbers = list(range(1, index.number_of_frames + 1))
    source = await frame_source(request, instance, index, numbers, wanted)

    async def parts() -> AsyncIterator[Part]:
        async for number, data in in_order(numbers, _reader(source), READ_AHEAD):
            yield f"frames/{number}", len(data), _one(data)

    return source.plan, parts()


def video_plan(instance: LocatedInstance, index: FrameIndex | None, wanted: Sequence[Wish]) -> Plan:
    """Video is served as stored, in its own media type, when the client accepts it."""
    ts = instance.transfer_syntax_uid
    media = media_type_of(ts)
    for wish in wanted:
        if wish.transfer_syntax not in (None, "*", ts):
            continue
        top = media.split("/")[0]
        if wish.media_range in ("*/*", f"{top}/*", media.lower()):
            if index is None or not index.fragments:
                break
            return Plan(STORED, ts, media, wish.multipart)
    raise TesseraError(
        ErrorCode.NOT_ACCEPTABLE,
        f"instance {instance.sop_uid} is a video, served as stored: accept {media}",
    )


async def _video_parts(
    request: web.Request, instance: LocatedInstance, index: FrameIndex | None
) -> AsyncIterator[Part]:
    fragments = video_fragments(instance, index)
    size = sum(length for _, length in fragments)
    yield "pixeldata", size, stream_ranges(request, instance.object_key, fragments)


def video_fragments(instance: LocatedInstance, index: FrameIndex | None) -> list[tuple[int, int]]:
    """Where the video's bitstream lies: its fragments' values, in order (PS3.5 §8.2.5-8)."""
    if index is None or not index.fragments:
        raise TesseraError(ErrorCode.NOT_FOUND, f"instance {instance.sop_uid} has no pixel data")
    return list(index.fragments)


async def stream_ranges(
    request: web.Request, key: str, ranges: Sequence[tuple[int, int]]
) -> AsyncIterator[bytes]:
    """The bytes of ``ranges`` of ``key``, streamed a chunk at a time."""
    blobs = request.app[BLOBS]
    for offset, length in ranges:
        async for chunk in stream_object(blobs, key, offset, offset + length):
            yield chunk


__all__ = [
    "OCTET_STREAM",
    "FrameSource",
    "frame_source",
    "parse_frame_list",
    "retrieve_bulk",
    "retrieve_frames",
    "stream_ranges",
    "video_fragments",
    "video_plan",
]
