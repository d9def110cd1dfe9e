"""Receiving a STOW-RS request body (PS3.18 §10.5.1.2): what its parts are, and each part
streamed into object storage under ``incoming/`` (claim check) while its SHA-256 is computed.

The request forms: ``multipart/related`` whose ``type`` is ``application/dicom`` (every part a
PS3.10 file), ``application/dicom+json`` or ``application/dicom+xml`` (metadata parts, and
bulk data parts that BulkDataURIs name by their Content-Location), or a single-part body of one
of those media types. Neither a request nor a part is ever held in memory; a body that ends
early or is malformed discards every upload and fails the whole request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from tessera_common.blobstore import BlobStore
from tessera_common.errors import ErrorCode, TesseraError
from tessera_common.layout import incoming_key

from .limits import BodyLimits, bounded_chunks, too_many_parts
from .multipart import (
    Event,
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
#: A part up to this size is written with one ``put`` (see ``_PartUpload``).
BUFFER_BYTES = 8 * 1024 * 1024
DICOM: Final = "application/dicom"
DICOM_JSON: Final = "application/dicom+json"
DICOM_XML: Final = "application/dicom+xml"
PART_MEDIA_TYPES = frozenset({DICOM, DICOM_JSON, DICOM_XML})
#: Bulk data media types (PS3.18 Table 8.7.3-5 and §8.7.3.3.1; the store's ``assemble.py``
#: decides which element and transfer syntax each may carry).
BULK_MEDIA_TYPES = frozenset(
    {
        "application/octet-stream",
        "application/pdf",
        "application/xml",
        "text/xml",
        "image/jpeg",
        "image/jls",
        "image/jp2",
        "image/jpx",
        "image/jphc",
        "image/dicom-rle",
        "video/mpeg",
        "video/mp4",
        "video/mpeg2",
        "video/h264",
        "video/h265",
    }
)
#: A metadata part is read whole by the store; a larger one fails the request (413).
MAX_METADATA_BYTES = 16 * 1024 * 1024
MAX_CONTENT_LOCATION = 2048


class _PartRefusedError(Exception):
    """A part the gateway will not upload; becomes that part's failure, not the request's."""


@dataclass(frozen=True, slots=True)
class RequestForm:
    """What the request's Content-Type says: the media type of its parts (``type``) and the
    multipart boundary, None for a single-part body."""

    part_type: str
    boundary: str | None


@dataclass(slots=True)
class ReceivedPart:
    """One part of the body; ``role`` is ``instance`` (PS3.10), ``metadata`` or ``bulk``."""

    index: int
    upload_key: str | None = None
    size: int = 0
    sha256: str = ""
    refusal: str | None = None
    role: str = "instance"
    content_location: str = ""
    media_type: str = ""
    transfer_syntax: str | None = None
    declared_size: int | None = None


class _PartUpload:
    """Streams one part's bytes into object storage with backpressure.

    The first ``BUFFER_BYTES`` are kept in memory and a part that ends within them is written
    with one ``put``: the object store's streaming upload buffers as much per part anyway
    (its multipart chunk), and handing it chunk by chunk costs a thread handoff each. A
    longer part switches to a streaming upload that starts with the buffered bytes, so
    memory stays bounded (ARCHITECTURE invariant 5)."""

    def __init__(self, blobs: BlobStore, key: str, max_bytes: int) -> None:
        self.key = key
        self._blobs = blobs
        self._max = max_bytes
        self._buffered: list[bytes] = []
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(UPLOAD_QUEUE_CHUNKS)
        self._hash = hashlib.sha256()
        self.size = 0
        self._task: asyncio.Task[int] | None = None

    async def _chunks(self, head: list[bytes]) -> AsyncIterator[bytes]:
        for buffered in head:
            yield buffered
        while (chunk := await self._queue.get()) is not None:
            yield chunk

    async def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self._max:
            raise _PartRefusedError(f"part is larger than the {self._max} byte limit")
        self._hash.update(data)
        if self._task is None:
            self._buffered.append(data)
            if self.size <= BUFFER_BYTES:
                return
            head, self._buffered = self._buffered, []
            self._task = asyncio.create_task(self._blobs.put_stream(self.key, self._chunks(head)))
            return
        if not self._queue.full():
            self._queue.put_nowait(data)
            return
        put = asyncio.ensure_future(self._queue.put(data))
        await asyncio.wait({put, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if not put.done():
            put.cancel()
            await self._task  # raises the upload's error

    async def finish(self) -> str:
        if self._task is None:
            data, self._buffered = b"".join(self._buffered), []
            await self._blobs.put(self.key, data)
        else:
            await self._queue.put(None)
            await self._task
        return self._hash.hexdigest()

    async def abort(self) -> None:
        self._buffered = []
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        await self._blobs.delete(self.key)


class SinglePartParser:
    """The events of a single-part body (PS3.18 §10.5.1.2): the body is the one part, whose
    media type is the request's; same interface as ``MultipartParser``."""

    def __init__(self, content_type: str) -> None:
        self._headers = {"content-type": content_type}
        self._started = False

    def feed(self, chunk: bytes) -> list[Event]:
        events: list[Event] = []
        if not self._started:
            self._started = True
            events.append(PartStart(0, self._headers))
        events.append(PartData(0, chunk))
        return events

    def close(self) -> list[Event]:
        return [PartEnd(0)] if self._started else []


async def receive_parts(
    request: web.Request, blobs: BlobStore, form: RequestForm, limits: BodyLimits
) -> list[ReceivedPart]:
    """Parse the body and upload each acceptable part; returns one entry per part.

    A part over ``max_part_bytes``, or unlike its Content-Length, becomes that part's failure;
    a body over ``max_request_bytes`` or ``max_parts``, a metadata part over
    ``MAX_METADATA_BYTES``, or a stalled client, fails the whole request and discards every
    upload.
    """
    parts: list[ReceivedPart] = []
    upload: _PartUpload | None = None

    async def on_event(event: Event) -> None:
        nonlocal upload
        if isinstance(event, PartStart):
            part = describe_part(event.index, event.headers, form.part_type)
            parts.append(part)
            if part.refusal is None:
                limit = MAX_METADATA_BYTES if part.role == "metadata" else limits.max_part_bytes
                upload = _PartUpload(blobs, incoming_key(), limit)
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
                    if parts[-1].role == "metadata":
                        raise TesseraError(
                            ErrorCode.PAYLOAD_TOO_LARGE,
                            f"metadata part {len(parts)} is larger than {MAX_METADATA_BYTES} "
                            "bytes; send fewer datasets per part, or large values as bulk data",
                        ) from None
        elif upload is not None:
            part = parts[-1]
            part.size = upload.size
            part.sha256 = await upload.finish()
            upload = None
            if part.declared_size is not None and part.declared_size != part.size:
                await blobs.delete(part.upload_key or "")
                part.upload_key = None
                part.refusal = (
                    f"the part holds {part.size} bytes but its Content-Length says "
                    f"{part.declared_size}"
                )

    try:
        parser = _parser(form, limits)  # an invalid boundary is a MultipartError: 400
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


def _parser(form: RequestForm, limits: BodyLimits) -> MultipartParser | SinglePartParser:
    if form.boundary is None:
        return SinglePartParser(form.part_type)
    return MultipartParser(
        form.boundary, max_header_bytes=limits.max_part_header_bytes, max_parts=limits.max_parts
    )


def describe_part(index: int, headers: Mapping[str, str], part_type: str) -> ReceivedPart:
    """Classify a part by its headers (PS3.18 §10.5.1.2): in a request of PS3.10 parts every
    part is an instance; in a metadata request a part is metadata (the request's ``type``, also
    when it has no Content-Type, §8.6.1.2) or bulk data, which needs a Content-Location."""
    part = ReceivedPart(index=index, role="instance" if part_type == DICOM else "metadata")
    content_type = headers.get("content-type")
    try:
        media = parse_content_type(content_type) if content_type else None
    except MediaTypeError:
        part.refusal = "part has an unreadable Content-Type"
        return part
    essence = media.essence if media else part_type
    length = headers.get("content-length")
    if length is not None:
        if not length.strip().isdigit():
            part.refusal = "part has an invalid Content-Length"
            return part
        part.declared_size = int(length)
    if essence == part_type:
        return part
    if part_type == DICOM or essence not in BULK_MEDIA_TYPES:
        expected = (
            "application/dicom parts"
            if part_type == DICOM
            else (f"{part_type} metadata or bulk data ({', '.join(sorted(BULK_MEDIA_TYPES))})")
        )
        part.refusal = f"part media type {essence} is not accepted here; send {expected}"
        return part
    part.role = "bulk"
    part.media_type = essence
    part.transfer_syntax = media.params.get("transfer-syntax") if media else None
    location = headers.get("content-location", "").strip()
    if not location:
        part.refusal = (
            "bulk data part has no Content-Location; BulkDataURIs name parts by it "
            "(PS3.18 §10.5.1.2)"
        )
    elif len(location) > MAX_CONTENT_LOCATION:
        part.refusal = f"Content-Location longer than {MAX_CONTENT_LOCATION} characters"
    part.content_location = location
    return part


async def discard(blobs: BlobStore, parts: list[ReceivedPart]) -> None:
    for part in parts:
        if part.upload_key:
            await blobs.delete(part.upload_key)


def request_form(content_type: str | None) -> RequestForm:
    """Check the request media type (PS3.18 §10.5.1.2) and say what its parts are."""
    supported = (
        'send multipart/related; type="application/dicom" (or type="application/dicom+json" '
        'or "application/dicom+xml" with bulk data parts), or a single application/dicom body'
    )
    if not content_type:
        raise TesseraError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, f"missing Content-Type; {supported}")
    try:
        media = parse_content_type(content_type)
    except MediaTypeError as exc:
        raise TesseraError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, str(exc)) from exc
    if media.essence in PART_MEDIA_TYPES:
        return RequestForm(media.essence, None)
    if media.essence != "multipart/related":
        raise TesseraError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE, f"{media.essence} is not supported; {supported}"
        )
    part_type = media.params.get("type", DICOM).lower()
    if part_type not in PART_MEDIA_TYPES:
        raise TesseraError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            f"multipart/related with type={part_type} is not supported; {supported}",
        )
    boundary = media.params.get("boundary")
    if not boundary:
        raise TesseraError(ErrorCode.BAD_MULTIPART, "multipart Content-Type has no boundary")
    return RequestForm(part_type, boundary)


def request_boundary(content_type: str | None) -> str:
    """The boundary of a multipart request (415 for a single-part body)."""
    form = request_form(content_type)
    if form.boundary is None:
        raise TesseraError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, "not a multipart request")
    return form.boundary
