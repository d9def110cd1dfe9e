"""WADO-RS, the Retrieve transaction (PS3.18 §10.4): instances and metadata.

Instances are streamed from object storage exactly as stored (``transfer-syntax=*``), one
multipart part per instance. Metadata is the precomputed instance JSON the store wrote,
joined by the gateway; BulkDataURIs are stored relative to the service root and made absolute
here.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

from aiohttp import web

from tessera_common.errors import ErrorCode, TesseraError
from tessera_common.messages import (
    LocatedInstance,
    LocateReply,
    LocateRequest,
    MetadataReply,
    MetadataRequest,
    Subject,
)

from .context import BLOBS, BUS, optional_path_uid, path_uid, service_root
from .negotiation import AcceptItem, parse_accept

BULKDATA_KEY = b'"BulkDataURI":"'


def _transfer_syntax_wanted(request: web.Request) -> str:
    """The transfer syntax the client accepts for ``application/dicom`` parts.

    PS3.18 §8.7.3.5.2 names Explicit VR Little Endian as the default when none is given; until
    the codec service lands, Tessera deviates and sends the stored syntax (docs/CONFORMANCE.md).
    Returns ``*`` or a specific UID.
    """
    items = parse_accept(request.headers.get("Accept"))
    accept_param = request.query.get("accept")
    if accept_param:
        items = parse_accept(accept_param)
    for item in items:
        if item.q <= 0:
            continue
        if _offers_dicom(item):
            return item.media_type.params.get("transfer-syntax", "*")
    raise TesseraError(
        ErrorCode.NOT_ACCEPTABLE,
        'instances are available as multipart/related; type="application/dicom"',
    )


def _offers_dicom(item: AcceptItem) -> bool:
    media = item.media_type
    if media.essence == "multipart/related":
        return media.params.get("type", "application/dicom").lower() == "application/dicom"
    return item.matches("multipart", "related")


async def locate_all(request: web.Request, locate: LocateRequest) -> AsyncIterator[LocatedInstance]:
    bus = request.app[BUS]
    offset: int | None = 0
    while offset is not None:
        reply = await bus.request(
            Subject.QUERY_LOCATE, locate.model_copy(update={"offset": offset}), LocateReply
        )
        for instance in reply.instances:
            yield instance
        offset = reply.next_offset


def _locate_request(request: web.Request) -> LocateRequest:
    return LocateRequest(
        study_uid=path_uid(request, "study"),
        series_uid=optional_path_uid(request, "series"),
        sop_uid=optional_path_uid(request, "instance"),
    )


async def retrieve(request: web.Request) -> web.StreamResponse:
    """Study, series or instance as ``multipart/related; type="application/dicom"``."""
    wanted = _transfer_syntax_wanted(request)
    locate = _locate_request(request)
    blobs = request.app[BLOBS]
    instances = locate_all(request, locate)
    first = await anext(instances)  # 404 comes from the query service before we start
    _check_syntax(first, wanted)
    boundary = uuid.uuid4().hex
    response = web.StreamResponse(
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'
        }
    )
    response.enable_chunked_encoding()
    await response.prepare(request)
    root = service_root(request)

    async def send(instance: LocatedInstance) -> None:
        _check_syntax(instance, wanted)
        head = (
            f"\r\n--{boundary}\r\n"
            f"Content-Type: application/dicom; transfer-syntax={instance.transfer_syntax_uid}\r\n"
            f"Content-Location: {root}/studies/{instance.study_uid}/series/"
            f"{instance.series_uid}/instances/{instance.sop_uid}\r\n"
            f"Content-Length: {instance.size}\r\n\r\n"
        )
        await response.write(head.encode())
        async for chunk in blobs.stream(instance.object_key):
            await response.write(chunk)

    await send(first)
    async for instance in instances:
        await send(instance)
    await response.write(f"\r\n--{boundary}--\r\n".encode())
    await response.write_eof()
    return response


def _check_syntax(instance: LocatedInstance, wanted: str) -> None:
    if wanted not in ("*", instance.transfer_syntax_uid):
        raise TesseraError(
            ErrorCode.NOT_ACCEPTABLE,
            f"instance {instance.sop_uid} is stored as {instance.transfer_syntax_uid}; "
            "ask for transfer-syntax=* (transcoding arrives with the codec service)",
        )


async def metadata(request: web.Request) -> web.StreamResponse:
    """Study, series or instance ``/metadata`` (PS3.18 §10.4.1.1.2), as DICOM JSON."""
    accept = parse_accept(request.headers.get("Accept"))
    if not any(
        i.q > 0 and (i.matches("application", "dicom+json") or i.matches("application", "json"))
        for i in accept
    ):
        raise TesseraError(
            ErrorCode.NOT_ACCEPTABLE, "metadata is available as application/dicom+json"
        )
    bus = request.app[BUS]
    ask = MetadataRequest(
        study_uid=path_uid(request, "study"),
        series_uid=optional_path_uid(request, "series"),
        sop_uid=optional_path_uid(request, "instance"),
    )
    reply = await bus.request(Subject.QUERY_METADATA, ask, MetadataReply)
    response = web.StreamResponse(headers={"Content-Type": "application/dicom+json"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    bulk_prefix = BULKDATA_KEY + service_root(request).encode() + b"/"
    separator = b"["
    while True:
        for document in reply.documents:
            await response.write(separator + document.encode().replace(BULKDATA_KEY, bulk_prefix))
            separator = b","
        if reply.next_offset is None:
            break
        reply = await bus.request(
            Subject.QUERY_METADATA,
            ask.model_copy(update={"offset": reply.next_offset}),
            MetadataReply,
        )
    await response.write(b"[]" if separator == b"[" else b"]")
    await response.write_eof()
    return response
