"""WADO-URI (PS3.18 §9): ``GET {root}/wado?requestType=WADO&studyUID=…&seriesUID=…&objectUID=…``.

Supported: ``contentType=application/dicom`` (the PS3.10 file; §9.1.2.2.1) with
``transferSyntax`` (default Explicit VR Little Endian, §9.1.2.2.7; another syntax is made by
the codec service; ``*`` is accepted as "as stored"), and the rendered content types
``image/jpeg`` (the default for images), ``image/png`` and ``image/gif`` made by the render
service, with ``frameNumber``, ``rows``, ``columns``, ``region``, ``windowCenter``,
``windowWidth``, ``imageQuality``, ``annotation`` and ``charset`` (§9.1.2.1); a video is served
as stored for ``video/*``. ``presentationUID``/``presentationSeriesUID`` (presentation states)
and ``anonymize`` are refused with 400 and a reason, as is any parameter PS3.18 §9.1.2 does
not define, or a rendering parameter with ``application/dicom``.
"""

from __future__ import annotations

from aiohttp import web

from tessera_common.errors import ErrorCode, TesseraError
from tessera_common.messages import LocatedInstance, LocateRequest
from tessera_common.rendering import (
    MAX_VIEWPORT,
    RENDERED_MEDIA_TYPES,
    MediaType,
    RenderParams,
    Viewport,
    parse_render_query,
)
from tessera_common.uid import InvalidUIDError, validate_uid

from .context import BLOBS
from .instances import FRAME_INDEXES, locate_one, stream_object
from .negotiation import parse_accept
from .rendered import Target, frame_count, send_single, send_video
from .transfer_syntax import ANY, DICOM, Kind, Wish, is_video
from .wado_rs import resolve

#: Every parameter of PS3.18 §9.1.2 (Table 9.1-1 names them case-sensitively).
_REQUIRED = ("requestType", "studyUID", "seriesUID", "objectUID")
_RENDERED_ONLY = (
    "frameNumber",
    "rows",
    "columns",
    "region",
    "windowCenter",
    "windowWidth",
    "imageQuality",
    "annotation",
    "presentationUID",
    "presentationSeriesUID",
)
_KNOWN = frozenset({*_REQUIRED, *_RENDERED_ONLY, "contentType", "charset", "anonymize",
                    "transferSyntax"})  # fmt: skip
_UNSUPPORTED = ("presentationUID", "presentationSeriesUID", "anonymize")


def _bad(reason: str) -> TesseraError:
    return TesseraError(ErrorCode.BAD_REQUEST, f"{reason} (PS3.18 §9.1.2)")


def _single(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise _bad(f"parameter {name} is given {len(values)} times")
    return values[0] if values else None


def _uid(request: web.Request, name: str, what: str) -> str:
    value = _single(request, name)
    if value is None or value == "":
        raise _bad(f"parameter {name} ({what}) is required")
    try:
        return validate_uid(value, what=what)
    except InvalidUIDError as exc:
        raise TesseraError(ErrorCode.INVALID_UID, str(exc)) from exc


async def retrieve(request: web.Request) -> web.StreamResponse:
    unknown = sorted(set(request.query) - _KNOWN)
    if unknown:
        raise _bad(f"unknown parameter {unknown[0]!r}")
    request_type = _single(request, "requestType")
    if request_type != "WADO":
        raise _bad("requestType=WADO is required")
    study = _uid(request, "studyUID", "Study Instance UID")
    series = _uid(request, "seriesUID", "Series Instance UID")
    sop = _uid(request, "objectUID", "SOP Instance UID")
    content_types = _content_types(request)
    locate = LocateRequest(study_uid=study, series_uid=series, sop_uid=sop)
    instance = await locate_one(request, locate)
    if content_types is None:
        # §9.1.2.1.4: the default is image/jpeg for images, application/dicom otherwise.
        has_pixels = await request.app[FRAME_INDEXES].get(instance) is not None
        content_types = ["image/jpeg"] if has_pixels else [DICOM]
    for name in _UNSUPPORTED:
        if _single(request, name) is not None:
            raise _bad(f"{name} is not supported")
    chosen = _choose(content_types, instance)
    if chosen != DICOM:
        return await _send_rendered(request, instance, chosen)
    for name in (*_RENDERED_ONLY, "anonymize"):
        if _single(request, name) is not None:
            reason = (
                "anonymize is not supported"
                if name == "anonymize"
                else f"{name} applies to rendered content types, not to application/dicom"
            )
            raise _bad(reason)
    wanted = _single(request, "transferSyntax") or None
    if wanted is not None and wanted != ANY:
        try:
            validate_uid(wanted, what="Transfer Syntax UID")
        except InvalidUIDError as exc:
            raise TesseraError(ErrorCode.INVALID_UID, str(exc)) from exc
    return await _send(request, instance, wanted)


def _content_types(request: web.Request) -> list[str] | None:
    """``contentType``: one or more media types, comma-separated, best first (§9.1.2.1.4)."""
    text = _single(request, "contentType")
    if text is None:
        return None
    items = parse_accept(text)
    if not items or any(item.media_type.type == "*" for item in items):
        raise _bad(f"contentType {text[:80]!r} is not a list of media types")
    return [item.media_type.essence for item in items if item.acceptable]


def _choose(content_types: list[str], instance: LocatedInstance) -> str:
    """The first content type of the client's list (best first) that can be made."""
    video = is_video(instance.transfer_syntax_uid)
    for content_type in content_types:
        if content_type == DICOM or (content_type in RENDERED_MEDIA_TYPES and not video):
            return content_type
        if video and content_type.startswith("video/"):
            return content_type
    raise TesseraError(
        ErrorCode.NOT_ACCEPTABLE,
        f"none of {', '.join(content_types)} can be made of this instance: ask for "
        "application/dicom, image/jpeg, image/png or image/gif (video/* for a video)",
    )


async def _send_rendered(
    request: web.Request, instance: LocatedInstance, content_type: str
) -> web.StreamResponse:
    """Retrieve Rendered Instance (§9.5): the render service's image of one frame."""
    if content_type.startswith("video/"):
        return await send_video(request, instance)
    media_type = next(m for m in RENDERED_MEDIA_TYPES if m == content_type)
    params = uri_render_params(request, media_type)
    count = await frame_count(request, instance)
    if count is None:
        raise TesseraError(
            ErrorCode.NOT_ACCEPTABLE, f"instance {instance.sop_uid} has no pixel data to render"
        )
    number = _positive(request, "frameNumber") or 1
    if number > count:
        raise _bad(f"frameNumber {number} does not exist: the instance has {count} frame(s)")
    return await send_single(request, Target(instance, [number]), params)


def _positive(request: web.Request, name: str) -> int | None:
    text = _single(request, name)
    if text is None:
        return None
    if not text.isdigit() or len(text) > 9 or int(text) < 1:
        raise _bad(f"{name} must be a positive integer")
    return int(text)


def _fraction_region(text: str) -> tuple[float, float, float, float]:
    """``region=x1,y1,x2,y2``: the rectangle to render, as fractions 0.0-1.0 (§9.1.2.1.9)."""
    parts = text.split(",")
    try:
        values = [float(part) for part in parts]
    except ValueError:
        values = []
    if len(values) != 4 or not all(0.0 <= value <= 1.0 for value in values):
        raise _bad("region must be x1,y1,x2,y2 with each value from 0.0 to 1.0")
    x1, y1, x2, y2 = values
    if x2 <= x1 or y2 <= y1:
        raise _bad("region must have x2 > x1 and y2 > y1")
    return x1, y1, x2, y2


def uri_render_params(request: web.Request, media_type: MediaType) -> RenderParams:
    """The rendering parameters of a WADO-URI request (§9.1.2.1), checked like the RESTful
    ones (PS3.18 §8.3.5.1)."""
    query: dict[str, str] = {}
    center, width = _single(request, "windowCenter"), _single(request, "windowWidth")
    if (center is None) != (width is None):
        raise _bad("windowCenter and windowWidth go together")
    if center is not None and width is not None:
        query["window"] = f"{center},{width}"
    for name, key in (
        ("imageQuality", "quality"),
        ("annotation", "annotation"),
        ("charset", "charset"),
    ):
        value = _single(request, name)
        if value is not None:
            query[key] = value
    params = parse_render_query(query, media_type)
    rows, columns = _positive(request, "rows"), _positive(request, "columns")
    region = _single(request, "region")
    if rows is None and columns is None and region is None:
        return params
    for side in (rows, columns):
        if side is not None and side > MAX_VIEWPORT:
            raise _bad(f"rows and columns must be at most {MAX_VIEWPORT}")
    fraction = _fraction_region(region) if region is not None else None
    viewport = Viewport(vw=columns, vh=rows, fraction=fraction)
    return params.model_copy(update={"viewport": viewport})


async def _send(
    request: web.Request, instance: LocatedInstance, wanted: str | None
) -> web.StreamResponse:
    delivery = await resolve(request, instance, [Wish(Kind.DICOM, DICOM, wanted)])
    response = web.StreamResponse(
        headers={
            "Content-Type": f"{DICOM}; transfer-syntax={delivery.transfer_syntax}",
            "Content-Disposition": f'attachment; filename="{instance.sop_uid}.dcm"',
        }
    )
    response.content_length = delivery.size
    await response.prepare(request)
    async for chunk in stream_object(request.app[BLOBS], delivery.key, 0, delivery.size):
        await response.write(chunk)
    await response.write_eof()
    return response
