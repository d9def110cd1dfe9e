"""WADO-RS, the Retrieve transaction (PS3.18 §10.4): study, series and instance resources.

Representations (PS3.18 §10.4.1.1, §8.7.3): ``multipart/related; type="application/dicom"``
with transfer-syntax negotiation (``transfer-syntax=*`` sends the stored bytes exactly; another
syntax is made by the codec service; none means Explicit VR Little Endian), bulk data media
types (``multipart/related; type="application/octet-stream"``, ``image/jpeg``, … — the pixel
data of each instance, frame by frame, see ``frames``) and ``application/zip`` (the PS3.10 files
in a ZIP archive, streamed). Bytes are streamed from object storage chunk by chunk; the next
few instances' transcodes are requested while one is being sent.

Metadata resources are in ``metadata``; frames, bulk data and pixel data in ``frames`` and
``bulkdata``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from aiohttp import web

from tessera_common.errors import ErrorCode, TesseraError
from tessera_common.messages import LocatedInstance

from . import frames
from .context import BLOBS, service_root
from .instances import (
    CODEC,
    MultipartWriter,
    abort,
    accept_items,
    instance_path,
    locate_all,
    locate_request,
    stream_object,
    write_object,
)
from .transfer_syntax import (
    DICOM,
    Kind,
    Plan,
    Wish,
    instance_plans,
    wishes,
)
from .zip_stream import ZipWriter

log = logging.getLogger(__name__)

#: Instances whose transcodes are requested ahead of the one being sent.
PREFETCH = 4
OFFERED = (
    'multipart/related; type="application/dicom" (transfer-syntax=* for the stored bytes), '
    'multipart/related; type="application/octet-stream" or a compressed bulk data media type, '
    "or application/zip"
)


@dataclass(frozen=True, slots=True)
class Delivery:
    """What to send for one instance: ``size`` bytes of object ``key``, in ``transfer_syntax``."""

    instance: LocatedInstance
    key: str
    size: int
    transfer_syntax: str


async def retrieve(request: web.Request) -> web.StreamResponse:
    """Study, series or instance retrieve (PS3.18 §10.4.1.1.1)."""
    wanted = wishes(accept_items(request))
    if not wanted:
        raise TesseraError(ErrorCode.NOT_ACCEPTABLE, f"instances are available as {OFFERED}")
    kind = wanted[0].kind
    same_kind = [w for w in wanted if w.kind is kind]
    instances = locate_all(request, locate_request(request))
    if kind is Kind.BULK:
        return await frames.retrieve_bulk(request, instances, same_kind)
    deliveries = _deliveries(request, instances, same_kind)
    first = await anext(deliveries)  # errors (404, 406) come before the response starts
    if kind is Kind.ZIP:
        return await _send_zip(request, first, deliveries)
    return await _send_multipart(request, first, deliveries)


async def _deliveries(
    request: web.Request, instances: AsyncIterator[LocatedInstance], wanted: Sequence[Wish]
) -> AsyncIterator[Delivery]:
    """Each instance resolved to the bytes to send, in order, with up to ``PREFETCH``
    transcodes under way ahead of the consumer."""
    pending: list[asyncio.Task[Delivery]] = []
    try:
        async for instance in instances:
            pending.append(asyncio.create_task(resolve(request, instance, wanted)))
            if len(pending) > PREFETCH:
                yield await pending.pop(0)
        while pending:
            yield await pending.pop(0)
    finally:
        for task in pending:
            task.cancel()


async def resolve(
    request: web.Request, instance: LocatedInstance, wanted: Sequence[Wish]
) -> Delivery:
    """The first plan that works for ``instance`` (PS3.18 §8.7.3.5)."""
    codec = request.app[CODEC]
    plans = instance_plans(wanted, instance.transfer_syntax_uid, await codec.capabilities())
    reasons: list[str] = []
    for plan in plans:
        if plan.stored:
            return Delivery(
                instance, instance.object_key, instance.size, instance.transfer_syntax_uid
            )
        try:
            reply = await codec.transcode(instance, plan.target)
        except TesseraError as exc:
            if exc.code is ErrorCode.NOT_ACCEPTABLE:
                reasons.append(exc.reason)
                continue
            raise
        if reply.instance is None:
            raise TesseraError(ErrorCode.INTERNAL, "the codec service sent no derived object")
        return Delivery(instance, reply.instance.object_key, reply.instance.size, plan.target)
    raise TesseraError(ErrorCode.NOT_ACCEPTABLE, _refusal(instance, wanted, reasons))


def _refusal(instance: LocatedInstance, wanted: Sequence[Wish], reasons: list[str]) -> str:
    asked = ", ".join(sorted({w.transfer_syntax or "(default)" for w in wanted}))
    because = f": {'; '.join(reasons)}" if reasons else ""
    return (
        f"instance {instance.sop_uid} is stored as {instance.transfer_syntax_uid} and cannot be "
        f"sent in the transfer syntax asked for ({asked}){because}; "
        "transfer-syntax=* sends it as stored"
    )


async def _send_multipart(
    request: web.Request, first: Delivery, rest: AsyncIterator[Delivery]
) -> web.StreamResponse:
    blobs = request.app[BLOBS]
    root = service_root(request)
    response = web.StreamResponse()
    writer = MultipartWriter(response)
    response.headers["Content-Type"] = writer.content_type(DICOM, writer.boundary)
    response.enable_chunked_encoding()
    await response.prepare(request)

    async def send(delivery: Delivery) -> None:
        await writer.start_part(
            [
                ("Content-Type", f"{DICOM}; transfer-syntax={delivery.transfer_syntax}"),
                ("Content-Location", f"{root}/{instance_path(delivery.instance)}"),
                ("Content-Length", delivery.size),
            ]
        )
        await write_object(request, response, blobs, delivery.key, 0, delivery.size)

    try:
        await send(first)
        async for delivery in rest:
            await send(delivery)
    except (TesseraError, OSError) as exc:
        return abort(request, response, exc)
    await writer.close()
    return response


async def _send_zip(
    request: web.Request, first: Delivery, rest: AsyncIterator[Delivery]
) -> web.StreamResponse:
    """The PS3.10 files as a ZIP archive (PS3.18 §8.7.3.1, ``application/zip``), named
    ``{study}/{series}/{sop}.dcm``."""
    blobs = request.app[BLOBS]
    study = first.instance.study_uid
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/zip",
            "Content-Disposition": f'attachment; filename="{study}.zip"',
        }
    )
    response.enable_chunked_encoding()
    await response.prepare(request)
    archive = ZipWriter()

    async def send(delivery: Delivery) -> None:
        i = delivery.instance
        name = f"{i.study_uid}/{i.series_uid}/{i.sop_uid}.dcm"
        await response.write(archive.begin(name, delivery.size))
        async for chunk in stream_object(blobs, delivery.key, 0, delivery.size):
            await response.write(archive.data(chunk))
        await response.write(archive.end())

    try:
        await send(first)
        async for delivery in rest:
            await send(delivery)
        await response.write(archive.finish())
    except (TesseraError, OSError) as exc:
        return abort(request, response, exc)
    await response.write_eof()
    return response


__all__ = ["Delivery", "Plan", "resolve", "retrieve"]
