"""Rendered and thumbnail resources (PS3.18 §10.4, Tables 10.3-2 and 10.4.1-1; query parameters
§8.3.5.1; media types §8.7.4).

The gateway negotiates the media type, parses the rendering parameters into a frozen
``RenderParams`` (400 on any bad value), decides which instances and frames to render, and
asks the render service (``render.frame``, queue group ``render``) for each image; the render
workers decode, apply the pixel pipeline, encode and cache (services/render).

What each resource returns (see docs/CONFORMANCE.md):

* **instance** ``/rendered``: the first frame; ``image/gif`` animates every frame of a
  multi-frame instance. A video instance is served as stored (``video/mp4`` …) when accepted.
* **frames** ``/frames/{list}/rendered``: one frame → one image; several → an animated GIF
  (``image/gif``) or ``multipart/related`` with one image per frame.
* **series** and **study** ``/rendered``: ``multipart/related``, one image per instance that
  has pixel data (its first frame; GIF animates), in the index's order.
* **thumbnail** at every level: one small image (viewport 128 x 128 unless given) of a
  representative frame — the middle frame of the middle instance of the largest series.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass

from aiohttp import web

from tessera_common.errors import ErrorCode, TesseraError
from tessera_common.messages import (
    MAX_RENDER_FRAMES,
    InstanceLocation,
    LocatedInstance,
    RenderReply,
    RenderRequest,
    RenderSubject,
)
from tessera_common.rendering import (
    RENDERED_MEDIA_TYPES,
    MediaType,
    RenderParams,
    parse_render_query,
)

from .ahead import in_order
from .bulkdata import Value, send_value
from .context import BLOBS, BUS, service_root
from .frames import parse_frame_list, video_fragments, video_plan
from .instances import (
    FRAME_INDEXES,
    MultipartWriter,
    abort,
    accept_items,
    instance_path,
    locate_all,
    locate_instance,
    locate_request,
)
from .mediatype import MediaTypeError, parse_media_range
from .negotiation import AcceptItem, choose
from .transfer_syntax import DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, is_video, wishes

#: Images rendered ahead of the one being written in a multipart response.
RENDER_AHEAD = 4
#: Instances a study or series thumbnail looks at to choose a representative one.
THUMBNAIL_CANDIDATES = 2000


@dataclass(frozen=True, slots=True)
class Target:
    """One image to render: frames of an instance."""

    instance: LocatedInstance
    frames: list[int]
    #: Named by its frame's URL (``…/frames/{n}/rendered``) rather than the instance's.
    by_frame: bool = False


def _flatten(accept: Iterable[AcceptItem]) -> list[AcceptItem]:
    """``multipart/related; type="image/jpeg"`` asks for JPEG parts: its ``type`` counts."""
    flat: list[AcceptItem] = []
    for item in accept:
        media = item.media_type
        if media.essence == "multipart/related":
            inner = media.params.get("type")
            if inner is None:
                continue
            try:
                flat.append(AcceptItem(parse_media_range(inner), item.q))
            except MediaTypeError:
                continue
        else:
            flat.append(item)
    return flat


def negotiate(request: web.Request) -> MediaType:
    """The rendered media type the client prefers (JPEG for ``*/*``, PS3.18 §8.7.4)."""
    chosen = choose(_flatten(accept_items(request)), RENDERED_MEDIA_TYPES)
    for media_type in RENDERED_MEDIA_TYPES:
        if media_type == chosen:
            return media_type
    raise TesseraError(
        ErrorCode.NOT_ACCEPTABLE,
        "rendered images are available as image/jpeg, image/png and image/gif",
    )


def render_params(request: web.Request, *, thumbnail: bool) -> RenderParams:
    query: dict[str, str] = {}
    for key in request.query:
        values = request.query.getall(key)
        if len(values) > 1 and key != "accept":
            raise TesseraError(ErrorCode.BAD_REQUEST, f"give the {key} parameter once")
        query[key] = values[0]
    return parse_render_query(query, negotiate(request), thumbnail=thumbnail)


# --- handlers -----------------------------------------------------------------------------------


async def retrieve_rendered(request: web.Request) -> web.StreamResponse:
    """``/rendered`` of a study, series, instance or frames."""
    if "frames" in request.match_info:
        return await _rendered_frames(request)
    if "instance" in request.match_info:
        return await _rendered_instance(request)
    params = render_params(request, thumbnail=False)
    targets = _instance_targets(request, params, locate_all(request, locate_request(request)))
    return await _send_multipart(request, targets, params)


async def retrieve_thumbnail(request: web.Request) -> web.StreamResponse:
    """``/thumbnail`` of a study, series, instance or frames: one small image."""
    params = render_params(request, thumbnail=True)
    if "frames" in request.match_info:
        numbers = parse_frame_list(request.match_info["frames"])
        instance = await locate_instance(request)
        return await send_single(request, Target(instance, numbers[:1]), params)
    if "instance" in request.match_info:
        instance = await locate_instance(request)
        count = await frame_count(request, instance)
        if count is None:
            raise _nothing_to_render(instance)
        return await send_single(request, Target(instance, [(count + 1) // 2]), params)
    target = await _representative(request)
    return await send_single(request, target, params)


async def _rendered_instance(request: web.Request) -> web.StreamResponse:
    instance = await locate_instance(request)
    if is_video(instance.transfer_syntax_uid):
        return await send_video(request, instance)
    params = render_params(request, thumbnail=False)
    count = await frame_count(request, instance)
    if count is None:
        raise _nothing_to_render(instance)
    return await send_single(request, Target(instance, _frames_of(count, params)), params)


async def _rendered_frames(request: web.Request) -> web.StreamResponse:
    numbers = parse_frame_list(request.match_info["frames"])
    params = render_params(request, thumbnail=False)
    instance = await locate_instance(request)
    count = await frame_count(request, instance)
    if count is None:
        raise _nothing_to_render(instance)
    missing = [number for number in numbers if number > count]
    if missing:
        raise TesseraError(
            ErrorCode.BAD_REQUEST,
            f"frame {missing[0]} does not exist: instance {instance.sop_uid} has {count}",
        )
    if len(numbers) == 1 or params.media_type == "image/gif":
        if len(numbers) > MAX_RENDER_FRAMES:
            raise TesseraError(
                ErrorCode.BAD_REQUEST, f"at most {MAX_RENDER_FRAMES} frames in one animation"
            )
        return await send_single(request, Target(instance, numbers), params)

    async def each() -> AsyncIterator[Target]:
        for number in numbers:
            yield Target(instance, [number], by_frame=True)

    return await _send_multipart(request, each(), params)


async def send_video(request: web.Request, instance: LocatedInstance) -> web.StreamResponse:
    """A video is not rendered but served as stored (PS3.18 Table 8.7.4-1, Video)."""
    index = await request.app[FRAME_INDEXES].get(instance)
    plan = video_plan(instance, index, wishes(accept_items(request), bulk_only=True))
    value = Value(instance.object_key, tuple(video_fragments(instance, index)), plan.media_type)
    return await send_value(request, value, multipart=False)


# --- choosing what to render -----------------------------------------------------------------


async def frame_count(request: web.Request, instance: LocatedInstance) -> int | None:
    """How many frames the instance has; None when it has no pixel data to render."""
    if is_video(instance.transfer_syntax_uid):
        return None
    index = await request.app[FRAME_INDEXES].get(instance)
    if index is not None:
        return max(1, index.number_of_frames)
    # Deflated objects are not indexed (PS3.5 §A.5); the render worker inflates them.
    if instance.transfer_syntax_uid == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        return 1
    return None


def _frames_of(count: int, params: RenderParams) -> list[int]:
    """The frames one rendered image of an instance shows: all of them animated, or the first."""
    if params.media_type == "image/gif":
        return list(range(1, min(count, MAX_RENDER_FRAMES) + 1))
    return [1]


async def _instance_targets(
    request: web.Request, params: RenderParams, instances: AsyncIterator[LocatedInstance]
) -> AsyncIterator[Target]:
    async for instance in instances:
        count = await frame_count(request, instance)
        if count is not None:
            yield Target(instance, _frames_of(count, params))


async def _representative(request: web.Request) -> Target:
    """The middle frame of the middle instance of the series with the most images."""
    series: dict[str, list[tuple[LocatedInstance, int]]] = {}
    seen = 0
    async for instance in locate_all(request, locate_request(request)):
        seen += 1
        count = await frame_count(request, instance)
        if count is not None:
            series.setdefault(instance.series_uid, []).append((instance, count))
        if seen >= THUMBNAIL_CANDIDATES:
            break
    if not series:
        raise TesseraError(
            ErrorCode.NOT_ACCEPTABLE, "nothing here has pixel data to make a thumbnail of"
        )
    largest = max(series.values(), key=len)
    instance, count = largest[(len(largest) - 1) // 2]
    return Target(instance, [(count + 1) // 2])


def _nothing_to_render(instance: LocatedInstance) -> TesseraError:
    return TesseraError(
        ErrorCode.NOT_ACCEPTABLE, f"instance {instance.sop_uid} has no pixel data to render"
    )


# --- asking the render service and answering ---------------------------------------------------


async def render(request: web.Request, target: Target, params: RenderParams) -> bytes:
    """The rendered image of ``target``, from the render service (inline or by reference)."""
    location = InstanceLocation.model_validate(
        target.instance.model_dump(include=set(InstanceLocation.model_fields))
    )
    reply, image = await request.app[BUS].request_with_payload(
        RenderSubject.FRAME,
        RenderRequest(instance=location, frames=target.frames, params=params),
        RenderReply,
    )
    if reply.key is None:
        if len(image) != reply.size:
            raise TesseraError(ErrorCode.INTERNAL, "the render service sent a cut-off image")
        return image
    return await request.app[BLOBS].get(reply.key)


async def send_single(
    request: web.Request, target: Target, params: RenderParams
) -> web.StreamResponse:
    body = await render(request, target, params)
    return web.Response(body=body, content_type=params.media_type)


async def _send_multipart(
    request: web.Request, targets: AsyncIterator[Target], params: RenderParams
) -> web.StreamResponse:
    """``multipart/related`` with one image per target; the first is rendered before the
    status is sent, so an error that stops everything is still a clean 4xx."""
    images = in_order(targets, lambda target: render(request, target, params), RENDER_AHEAD)
    try:
        first = await anext(images)
    except StopAsyncIteration:
        raise TesseraError(
            ErrorCode.NOT_ACCEPTABLE, "nothing here has pixel data to render"
        ) from None
    response = web.StreamResponse()
    writer = MultipartWriter(response)
    response.content_type = "multipart/related"
    response.headers["Content-Type"] = writer.content_type(params.media_type, writer.boundary)
    response.enable_chunked_encoding()
    await response.prepare(request)
    root = service_root(request)
    try:
        await _write_part(writer, root, first, params)
        async for item in images:
            await _write_part(writer, root, item, params)
        await writer.close()
    except (TesseraError, ConnectionError) as exc:
        return abort(request, response, exc)
    finally:
        await images.aclose()
    return response


async def _write_part(
    writer: MultipartWriter, root: str, item: tuple[Target, bytes], params: RenderParams
) -> None:
    target, body = item
    location = f"{root}/{instance_path(target.instance)}/{_rendered_suffix(target)}"
    headers: Sequence[tuple[str, object]] = (
        ("Content-Type", params.media_type),
        ("Content-Location", location),
        ("Content-Length", len(body)),
    )
    await writer.part(headers, body)


def _rendered_suffix(target: Target) -> str:
    if target.by_frame:
        return f"frames/{target.frames[0]}/rendered"
    return "rendered"


def add_rendered_routes(router: web.UrlDispatcher, study: str, series: str, instance: str) -> None:
    """``/rendered`` and ``/thumbnail`` under every level (PS3.18 Table 10.4.1-1)."""
    for resource in (study, series, instance, instance + "/frames/{frames}"):
        router.add_get(resource + "/rendered", retrieve_rendered)
        router.add_get(resource + "/thumbnail", retrieve_thumbnail)
