"""STOW-RS, the Studies Store transaction (PS3.18 §10.5).

The request body is parsed as it arrives; each part is streamed into object storage under
``incoming/`` (claim check) while its SHA-256 is computed, so neither a request nor an instance
is ever held in memory. Once the whole body has arrived intact, every part is handed to the
store service (bounded concurrency). A body that ends early or is malformed stores nothing: its
uploads are deleted and the client gets a 400 with the reason (invariant 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from tessera_common.blobstore import BlobStore
from tessera_common.bus import Bus
from tessera_common.dicom_json import element
from tessera_common.errors import (
    ErrorCode,
    FailureReason,
    TesseraError,
    stow_response_status,
)
from tessera_common.layout import incoming_key
from tessera_common.messages import IngestRequest, InstanceOutcome, Subject

from .context import BLOBS, BUS, SETTINGS, optional_path_uid, service_root
from .limits import BodyLimits, bounded_chunks, check_content_length, too_many_parts
from .multipart import (
    MediaTypeError,
    MultipartError,
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
    TooManyPartsError,
    parse_content_type,
)

READ_CHUNK = 256 * 1024
UPLOAD_QUEUE_CHUNKS = 8
INGEST_CONCURRENCY = 8
INGEST_ATTEMPTS = 3
PART_MEDIA_TYPES = frozenset({"application/dicom"})
MAX_WARNING_HEADERS = 20


class _PartRefusedError(Exception):
    """A part the gateway will not upload; becomes that part's failure, not the request's."""


@dataclass(slots=True)
class ReceivedPart:
    index: int
    upload_key: str | None = None
    size: int = 0
    sha256: str = ""
    refusal: str | None = None


class _PartUpload:
    """Streams one part's bytes into object storage with backpressure."""

    def __init__(self, blobs: BlobStore, key: str, max_bytes: int) -> None:
        self.key = key
        self._blobs = blobs
        self._max = max_bytes
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(UPLOAD_QUEUE_CHUNKS)
        self._hash = hashlib.sha256()
        self.size = 0
        self._task = asyncio.create_task(blobs.put_stream(key, self._chunks()))

    async def _chunks(self) -> AsyncIterator[bytes]:
        while (chunk := await self._queue.get()) is not None:
            yield chunk

    async def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self._max:
            raise _PartRefusedError(f"part is larger than the {self._max} byte limit")
        self._hash.update(data)
        if not self._queue.full():
            self._queue.put_nowait(data)
            return
        put = asyncio.ensure_future(self._queue.put(data))
        await asyncio.wait({put, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if not put.done():
            put.cancel()
            await self._task  # raises the upload's error

    async def finish(self) -> str:
        await self._queue.put(None)
        await self._task
        return self._hash.hexdigest()

    async def abort(self) -> None:
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task
        await self._blobs.delete(self.key)


async def receive_parts(
    request: web.Request, blobs: BlobStore, boundary: str, limits: BodyLimits
) -> list[ReceivedPart]:
    """Parse the body and upload each acceptable part; returns one entry per part.

    A part over ``max_part_bytes`` becomes that part's failure; a body over
    ``max_request_bytes`` or ``max_parts``, or a stalled client, fails the whole request and
    discards every upload.
    """
    parser = MultipartParser(
        boundary, max_header_bytes=limits.max_part_header_bytes, max_parts=limits.max_parts
    )
    max_part_bytes = limits.max_part_bytes
    parts: list[ReceivedPart] = []
    upload: _PartUpload | None = None

    async def on_event(event: PartStart | PartData | PartEnd) -> None:
        nonlocal upload
        if isinstance(event, PartStart):
            part = ReceivedPart(index=event.index)
            parts.append(part)
            part.refusal = _refuse_part_type(event.headers.get("content-type"))
            if part.refusal is None:
                upload = _PartUpload(blobs, incoming_key(), max_part_bytes)
                part.upload_key = upload.key
        elif isinstance(event, PartData):
            if upload is not None:
                try:
                    await upload.write(event.data)
                except _PartRefusedError as refused:
                    await upload.abort()
                    upload = None
                    parts[-1].upload_key = None
                    parts[-1].refusal = str(refused)
        elif upload is not None:
            part = parts[-1]
            part.size = upload.size
            part.sha256 = await upload.finish()
            upload = None

    try:
        async for chunk in bounded_chunks(lambda: request.content.read(READ_CHUNK), limits):
            for event in parser.feed(chunk):
                await on_event(event)
        for event in parser.close():
            await on_event(event)
    except BaseException as exc:
        if upload is not None:
            await upload.abort()
        await discard(blobs, parts)
        if isinstance(exc, TooManyPartsError):
            raise too_many_parts(limits.max_parts) from exc
        if isinstance(exc, MultipartError):
            raise TesseraError(ErrorCode.BAD_MULTIPART, str(exc)) from exc
        raise
    return parts


def _refuse_part_type(content_type: str | None) -> str | None:
    if content_type is None:
        return None  # PS3.18 §8.6.1.2: the type parameter of the request applies
    try:
        essence = parse_content_type(content_type).essence
    except MediaTypeError:
        return "part has an unreadable Content-Type"
    if essence not in PART_MEDIA_TYPES:
        return f"part media type {essence} is not accepted here; send application/dicom parts"
    return None


async def discard(blobs: BlobStore, parts: list[ReceivedPart]) -> None:
    for part in parts:
        if part.upload_key:
            await blobs.delete(part.upload_key)


def request_boundary(content_type: str | None) -> str:
    """Check the request media type (PS3.18 §10.5.1.1) and return the multipart boundary."""
    if not content_type:
        raise TesseraError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            'missing Content-Type; send multipart/related; type="application/dicom"',
        )
    try:
        media = parse_content_type(content_type)
    except MediaTypeError as exc:
        raise TesseraError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, str(exc)) from exc
    if media.essence != "multipart/related":
        raise TesseraError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            f'{media.essence} is not supported; send multipart/related; type="application/dicom"',
        )
    part_type = media.params.get("type", "application/dicom").lower()
    if part_type not in PART_MEDIA_TYPES:
        raise TesseraError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            f"multipart/related with type={part_type} is not supported yet; "
            'send type="application/dicom" (PS3.10 files)',
        )
    boundary = media.params.get("boundary")
    if not boundary:
        raise TesseraError(ErrorCode.BAD_MULTIPART, "multipart Content-Type has no boundary")
    return boundary


class Ingest:
    """Hands received parts to the store service, a few at a time."""

    def __init__(self, bus: Bus, blobs: BlobStore, study_uid: str | None) -> None:
        self._bus = bus
        self._blobs = blobs
        self._study_uid = study_uid
        self._limit = asyncio.Semaphore(INGEST_CONCURRENCY)

    async def run(self, parts: list[ReceivedPart]) -> list[InstanceOutcome]:
        return list(await asyncio.gather(*(self._one(part) for part in parts)))

    async def _one(self, part: ReceivedPart) -> InstanceOutcome:
        if part.upload_key is None:
            return InstanceOutcome(
                stored=False,
                failure_reason=FailureReason.CANNOT_UNDERSTAND,
                reason=part.refusal or "part refused",
            )
        message = IngestRequest(
            upload_key=part.upload_key,
            size=part.size,
            sha256=part.sha256,
            expected_study_uid=self._study_uid,
        )
        async with self._limit:
            for attempt in range(1, INGEST_ATTEMPTS + 1):
                try:
                    return await self._bus.request(Subject.STORE_INGEST, message, InstanceOutcome)
                except TesseraError as exc:
                    retry = exc.code in {ErrorCode.TIMEOUT, ErrorCode.SERVICE_UNAVAILABLE}
                    if (
                        retry
                        and attempt < INGEST_ATTEMPTS
                        and await self._blobs.head(part.upload_key)
                    ):
                        continue
                    await self._blobs.delete(part.upload_key)
                    reason = (
                        FailureReason.OUT_OF_RESOURCES
                        if retry
                        else FailureReason.PROCESSING_FAILURE
                    )
                    return InstanceOutcome(stored=False, failure_reason=reason, reason=exc.reason)
        raise AssertionError("unreachable")


def response_body(root: str, outcomes: list[InstanceOutcome]) -> dict[str, Any]:
    """The Store Instances Response Module (PS3.18 Annex I, Table I.1-1) as DICOM JSON."""
    body: dict[str, Any] = {}
    stored = [o for o in outcomes if o.stored]
    failed = [o for o in outcomes if not o.stored]
    studies = {o.study_uid for o in stored}
    if len(studies) == 1:
        body["00081190"] = element("UR", f"{root}/studies/{studies.pop()}")
    else:
        body["00081190"] = element("UR")
    if failed:
        body["00081198"] = element("SQ", *(_reference(o) for o in failed))
    if stored:
        items = []
        for o in stored:
            item = _reference(o)
            item["00081190"] = element(
                "UR",
                f"{root}/studies/{o.study_uid}/series/{o.series_uid}/instances/{o.sop_instance_uid}",
            )
            if o.warning_reason is not None:
                item["00081196"] = element("US", o.warning_reason)
            items.append(item)
        body["00081199"] = element("SQ", *items)
    return body


def _reference(outcome: InstanceOutcome) -> dict[str, Any]:
    item: dict[str, Any] = {}
    if outcome.sop_class_uid:
        item["00081150"] = element("UI", outcome.sop_class_uid)
    if outcome.sop_instance_uid:
        item["00081155"] = element("UI", outcome.sop_instance_uid)
    if not outcome.stored and outcome.failure_reason is not None:
        item["00081197"] = element("US", outcome.failure_reason)
    return item


async def store_instances(request: web.Request) -> web.Response:
    """``POST /studies`` and ``POST /studies/{study}``."""
    settings = request.app[SETTINGS]
    blobs = request.app[BLOBS]
    study_uid = optional_path_uid(request, "study")
    boundary = request_boundary(request.headers.get("Content-Type"))
    limits = BodyLimits.from_settings(settings)
    check_content_length(request.content_length, limits.max_request_bytes)
    if request.content_length == 0 or not request.body_exists:
        raise TesseraError(ErrorCode.EMPTY_REQUEST, "the request body is empty")
    parts = await receive_parts(request, blobs, boundary, limits)
    if not parts:
        raise TesseraError(ErrorCode.EMPTY_REQUEST, "the multipart body contains no parts")
    try:
        outcomes = await Ingest(request.app[BUS], blobs, study_uid).run(parts)
    except BaseException:
        await discard(blobs, parts)
        raise
    stored = sum(o.stored for o in outcomes)
    warned = sum(o.stored and o.warning_reason is not None for o in outcomes)
    status = stow_response_status(stored, len(outcomes) - stored, warned)
    response = web.Response(
        status=status,
        body=orjson.dumps(response_body(service_root(request), outcomes)),
        content_type="application/dicom+json",
    )
    noted = [(i, o) for i, o in enumerate(outcomes) if o.reason]
    for index, outcome in noted[:MAX_WARNING_HEADERS]:
        kind = "stored with warning" if outcome.stored else "failed"
        text = f"part {index + 1} {kind}: {outcome.reason}".replace('"', "'")
        response.headers.add("Warning", f'299 tessera "{text}"')
    return response
