"""WADO-URI (PS3.18 §9): ``GET {root}/wado?requestType=WADO&studyUID=…&seriesUID=…&objectUID=…``.

Supported: ``contentType=application/dicom`` (the PS3.10 file; §9.1.2.2.1) with
``transferSyntax`` (default Explicit VR Little Endian, §9.1.2.2.7; another syntax is made by
the codec service; ``*`` is accepted as "as stored"). Rendered content types (``image/jpeg``,
``image/png``, ``image/gif``, ``video/*``, the default for images) need the render service,
which Tessera does not have yet: 406 with that reason. The parameters that only apply to
rendered images (``frameNumber``, ``rows``, ``columns``, ``region``, ``windowCenter``,
``windowWidth``, ``imageQuality``, ``annotation``, ``presentationUID``,
``presentationSeriesUID``) and ``anonymize`` are refused with 400 and a reason, as is any
parameter PS3.18 §9.1.2 does not define.
"""

from __future__ import annotations

from aiohttp import web

from tessera_common.errors import ErrorCode, TesseraError
from tessera_common.messages import LocatedInstance, LocateRequest
from tessera_common.uid import InvalidUIDError, validate_uid

from .context import BLOBS
from .instances import FRAME_INDEXES, locate_all, stream_object
from .negotiation import parse_accept
from .transfer_syntax import ANY, DICOM, Kind, Wish
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
_RENDER_REASON = (
    "rendered WADO-URI content ({}) needs the render service, which this Tessera does not "
    "have yet; ask for contentType=application/dicom"
)


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
    instance = await anext(locate_all(request, locate))
    if content_types is None:
        # §9.1.2.1.4: the default is image/jpeg for images, application/dicom otherwise.
        has_pixels = await request.app[FRAME_INDEXES].get(instance) is not None
        content_types = ["image/jpeg"] if has_pixels else [DICOM]
    if DICOM not in content_types:
        raise TesseraError(
            ErrorCode.NOT_ACCEPTABLE, _RENDER_REASON.format(", ".join(content_types))
        )
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
