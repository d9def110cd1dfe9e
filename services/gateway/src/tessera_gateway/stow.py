"""STOW-RS, the Studies Store transaction (PS3.18 §10.5).

Request forms (PS3.18 §10.5.1.2, received by ``stow_parts.py``): ``multipart/related`` with
``type="application/dicom"`` (PS3.10 files), with ``type="application/dicom+json"`` or
``type="application/dicom+xml"`` (metadata parts plus bulk data parts named by
Content-Location), and a single-part body. The response is the Store Instances Response Module
(PS3.18 Annex I) in ``application/dicom+json`` or ``application/dicom+xml`` as the Accept
header asks (406 otherwise).

Once the whole body has arrived intact, the PS3.10 parts are handed to the store service in
batches (``store.ingest_batch``), and every metadata part with a manifest of the bulk data parts
(``store.assemble``: the store builds a PS3.10 object per dataset and ingests it), a few at a
time. Per-instance outcomes are values: one bad part never aborts the others.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

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
from tessera_common.messages import (
    AssembleReply,
    AssembleRequest,
    BulkPart,
    IngestBatchReply,
    IngestBatchRequest,
    IngestRequest,
    InstanceOutcome,
    Message,
    Subject,
)

from .context import BLOBS, BUS, SETTINGS, optional_path_uid, service_root
from .dicom_xml import to_xml
from .limits import BodyLimits, check_content_length
from .locations import LOCATIONS
from .negotiation import choose, parse_accept
from .stow_parts import (
    DICOM,
    DICOM_JSON,
    DICOM_XML,
    ReceivedPart,
    describe_part,
    discard,
    receive_parts,
    request_boundary,
    request_form,
)

__all__ = ["describe_part", "request_boundary", "request_form", "store_instances"]

#: Batches of one request in flight at once.
INGEST_CONCURRENCY = 4
INGEST_BATCH_PARTS = 16
INGEST_BATCH_BYTES = 64 * 1024 * 1024
INGEST_ATTEMPTS = 3
RESPONSE_MEDIA_TYPES = (DICOM_JSON, DICOM_XML)
ASSEMBLE_CONCURRENCY = 4
#: Building instances takes longer than ingesting a file: this many request timeouts.
ASSEMBLE_TIMEOUT_FACTOR = 5
MAX_WARNING_HEADERS = 20
ReplyT = TypeVar("ReplyT", bound=Message)


def response_media_type(accept: str | None) -> str:
    """``application/dicom+json`` or ``application/dicom+xml`` as the client prefers
    (PS3.18 §10.5.3; JSON on a tie); 406 when it accepts neither."""
    chosen = choose(parse_accept(accept), RESPONSE_MEDIA_TYPES)
    if chosen is None:
        raise TesseraError(
            ErrorCode.NOT_ACCEPTABLE,
            "the Store Instances response is available as application/dicom+json or "
            "application/dicom+xml only (PS3.18 §10.5.3)",
        )
    return chosen


async def _request(
    bus: Bus,
    blobs: BlobStore,
    subject: Subject,
    message: Message,
    reply_type: type[ReplyT],
    keys: list[str],
    timeout: float | None = None,
) -> ReplyT:
    """``bus.request``, retried while the store is unavailable or slow and the uploads named
    by ``keys`` still exist (a store killed mid-batch comes back and finds them)."""
    for attempt in range(1, INGEST_ATTEMPTS + 1):
        try:
            return await bus.request(subject, message, reply_type, timeout=timeout)
        except TesseraError as exc:
            retry = exc.code in {ErrorCode.TIMEOUT, ErrorCode.SERVICE_UNAVAILABLE}
            if retry and attempt < INGEST_ATTEMPTS and all([await blobs.head(k) for k in keys]):
                continue
            raise
    raise AssertionError("unreachable")


def _bus_failure(exc: TesseraError) -> InstanceOutcome:
    retry = exc.code in {ErrorCode.TIMEOUT, ErrorCode.SERVICE_UNAVAILABLE}
    reason = FailureReason.OUT_OF_RESOURCES if retry else FailureReason.PROCESSING_FAILURE
    return InstanceOutcome(stored=False, failure_reason=reason, reason=exc.reason)


def _refused(part: ReceivedPart) -> InstanceOutcome:
    return InstanceOutcome(
        stored=False,
        failure_reason=FailureReason.CANNOT_UNDERSTAND,
        reason=part.refusal or "part refused",
    )


class Ingest:
    """Hands received PS3.10 parts to the store service in batches (``store.ingest_batch``):
    one message, one index transaction and concurrent event publication per batch, instead of
    one of each per part. A batch holds at most ``INGEST_BATCH_PARTS`` parts and, unless it is
    a single part, ``INGEST_BATCH_BYTES``, so that a batch of large instances does not outlast
    the request timeout; a few batches of a request run at a time (several store replicas
    share them)."""

    def __init__(self, bus: Bus, blobs: BlobStore, study_uid: str | None) -> None:
        self._bus = bus
        self._blobs = blobs
        self._study_uid = study_uid
        self._limit = asyncio.Semaphore(INGEST_CONCURRENCY)

    async def run(self, parts: list[ReceivedPart]) -> list[InstanceOutcome]:
        outcomes: dict[int, InstanceOutcome] = {}
        accepted: list[tuple[int, ReceivedPart]] = []
        for position, part in enumerate(parts):
            if part.upload_key is None:
                outcomes[position] = _refused(part)
            else:
                accepted.append((position, part))
        for batch in await asyncio.gather(*(self._batch(b) for b in ingest_batches(accepted))):
            outcomes.update(batch)
        return [outcomes[position] for position in range(len(parts))]

    async def _batch(self, batch: list[tuple[int, ReceivedPart]]) -> dict[int, InstanceOutcome]:
        """Outcomes of one batch by position. A batch the store did not answer (timeout, no
        store) is sent again, up to ``INGEST_ATTEMPTS`` times, with the parts whose uploads
        still exist (a store killed mid-batch comes back and finds them); the others fail
        with a retryable reason."""
        outcomes: dict[int, InstanceOutcome] = {}
        pending = batch
        async with self._limit:
            for attempt in range(1, INGEST_ATTEMPTS + 1):
                message = IngestBatchRequest(
                    parts=[
                        IngestRequest(
                            upload_key=part.upload_key or "",
                            size=part.size,
                            sha256=part.sha256,
                            expected_study_uid=self._study_uid,
                        )
                        for _, part in pending
                    ]
                )
                try:
                    reply = await self._send(message)
                    if len(reply.outcomes) != len(pending):
                        raise TesseraError(
                            ErrorCode.INTERNAL, "the store answered for another number of parts"
                        )
                except TesseraError as exc:
                    retry = exc.code in {ErrorCode.TIMEOUT, ErrorCode.SERVICE_UNAVAILABLE}
                    still = [False] * len(pending)
                    if retry and attempt < INGEST_ATTEMPTS:
                        found = await asyncio.gather(
                            *(self._blobs.head(part.upload_key or "") for _, part in pending)
                        )
                        still = [info is not None for info in found]
                    for (position, _), exists in zip(pending, still, strict=True):
                        if not exists:
                            outcomes[position] = _bus_failure(exc)
                    pending = [item for item, exists in zip(pending, still, strict=True) if exists]
                    if pending:
                        continue
                    break
                outcomes.update(
                    (position, outcome)
                    for (position, _), outcome in zip(pending, reply.outcomes, strict=True)
                )
                break
        # A part that failed inside Tessera may have left its upload; the store deletes the
        # uploads of the instances it refuses and renames those it stores.
        await asyncio.gather(
            *(
                self._blobs.delete(part.upload_key or "")
                for position, part in batch
                if not outcomes[position].stored
            )
        )
        return outcomes

    async def _send(self, message: IngestBatchRequest) -> IngestBatchReply:
        """A batch of one part travels as ``store.ingest``, the same work in a smaller
        message."""
        if len(message.parts) == 1:
            outcome = await self._bus.request(
                Subject.STORE_INGEST, message.parts[0], InstanceOutcome
            )
            return IngestBatchReply(outcomes=[outcome])
        return await self._bus.request(Subject.STORE_INGEST_BATCH, message, IngestBatchReply)


def ingest_batches(
    parts: list[tuple[int, ReceivedPart]],
) -> list[list[tuple[int, ReceivedPart]]]:
    """``parts`` cut into batches of similar length, each of at most ``INGEST_BATCH_PARTS``
    parts and ``INGEST_BATCH_BYTES`` (a larger part goes alone)."""
    if not parts:
        return []
    count = -(-len(parts) // INGEST_BATCH_PARTS)
    target = -(-len(parts) // count)
    batches: list[list[tuple[int, ReceivedPart]]] = [[]]
    size = 0
    for item in parts:
        current = batches[-1]
        if current and (len(current) >= target or size + item[1].size > INGEST_BATCH_BYTES):
            batches.append([])
            size = 0
        batches[-1].append(item)
        size += item[1].size
    return batches


class Assembly:
    """Hands the metadata parts of a metadata + bulk data request to the store service
    (``store.assemble``, PS3.18 §10.5.1.2) with a manifest of the bulk data parts, and reports
    bulk data parts that no BulkDataURI referenced. The parts are the gateway's own uploads:
    the caller deletes them all once the store has answered."""

    def __init__(
        self, bus: Bus, blobs: BlobStore, study_uid: str | None, part_type: str, timeout: float
    ) -> None:
        self._bus = bus
        self._blobs = blobs
        self._study_uid = study_uid
        self._part_type = part_type
        self._timeout = timeout
        self._limit = asyncio.Semaphore(ASSEMBLE_CONCURRENCY)
        self._failures: dict[int, InstanceOutcome] = {}
        self.manifest_key: str | None = None

    async def run(self, parts: list[ReceivedPart]) -> list[InstanceOutcome]:
        bulk = [p for p in parts if p.role == "bulk" and p.upload_key]
        if bulk:
            manifest = [
                BulkPart(
                    key=p.upload_key or "",
                    content_location=p.content_location,
                    media_type=p.media_type,
                    transfer_syntax=p.transfer_syntax,
                    size=p.size,
                ).model_dump()
                for p in bulk
            ]
            self.manifest_key = incoming_key()
            await self._blobs.put(self.manifest_key, orjson.dumps(manifest))
        metadata = [p for p in parts if p.role == "metadata" and p.upload_key]
        replies = await asyncio.gather(*(self._one(part) for part in metadata))
        by_part = {part.index: reply for part, reply in zip(metadata, replies, strict=True)}
        used = {i for reply in replies if reply for i in reply.referenced}
        referenced = {part.index for i, part in enumerate(bulk) if i in used}
        complete = all(reply is not None for reply in replies)
        outcomes: list[InstanceOutcome] = []
        for part in parts:
            if part.upload_key is None:
                outcomes.append(_refused(part))
            elif part.role == "metadata":
                reply = by_part[part.index]
                outcomes.extend(reply.outcomes if reply else [self._failures[part.index]])
            elif part.role == "bulk" and complete and part.index not in referenced:
                outcomes.append(
                    InstanceOutcome(
                        stored=False,
                        failure_reason=FailureReason.CANNOT_UNDERSTAND,
                        reason=f"bulk data part (Content-Location {part.content_location[:120]})"
                        " is referenced by no BulkDataURI of the metadata",
                    )
                )
        return outcomes

    async def _one(self, part: ReceivedPart) -> AssembleReply | None:
        message = AssembleRequest(
            metadata_key=part.upload_key or "",
            metadata_size=part.size,
            metadata_type=DICOM_XML if self._part_type == DICOM_XML else DICOM_JSON,
            manifest_key=self.manifest_key,
            expected_study_uid=self._study_uid,
        )
        keys = [k for k in (part.upload_key, self.manifest_key) if k]
        async with self._limit:
            try:
                return await _request(
                    self._bus,
                    self._blobs,
                    Subject.STORE_ASSEMBLE,
                    message,
                    AssembleReply,
                    keys,
                    timeout=self._timeout,
                )
            except TesseraError as exc:
                self._failures[part.index] = _bus_failure(exc)
                return None


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
            if o.original_attributes:
                item["04000561"] = element("SQ", *o.original_attributes)
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
    form = request_form(request.headers.get("Content-Type"))
    media_type = response_media_type(request.headers.get("Accept"))
    limits = BodyLimits.from_settings(settings)
    check_content_length(request.content_length, limits.max_request_bytes)
    if request.content_length == 0 or not request.body_exists:
        raise TesseraError(ErrorCode.EMPTY_REQUEST, "the request body is empty")
    parts = await receive_parts(request, blobs, form, limits)
    if not parts or (form.boundary is None and parts[0].size == 0):
        await discard(blobs, parts)
        raise TesseraError(ErrorCode.EMPTY_REQUEST, "the request body contains no parts")
    if form.part_type == DICOM:
        try:
            outcomes = await Ingest(request.app[BUS], blobs, study_uid).run(parts)
        except BaseException:
            await discard(blobs, parts)
            raise
    else:
        timeout = settings.request_timeout * ASSEMBLE_TIMEOUT_FACTOR
        assembly = Assembly(request.app[BUS], blobs, study_uid, form.part_type, timeout)
        try:
            outcomes = await assembly.run(parts)
        finally:
            await discard(blobs, parts)
            if assembly.manifest_key:
                await blobs.delete(assembly.manifest_key)
    request.app[LOCATIONS].forget(o.sop_instance_uid for o in outcomes if o.sop_instance_uid)
    stored = sum(o.stored for o in outcomes)
    warned = sum(o.stored and o.warning_reason is not None for o in outcomes)
    status = stow_response_status(stored, len(outcomes) - stored, warned)
    body = response_body(service_root(request), outcomes)
    response = web.Response(
        status=status,
        body=to_xml(body) if media_type == DICOM_XML else orjson.dumps(body),
        content_type=media_type,
    )
    noted = [(i, o) for i, o in enumerate(outcomes) if o.reason]
    for index, outcome in noted[:MAX_WARNING_HEADERS]:
        kind = "stored with warning" if outcome.stored else "failed"
        noun = "part" if form.part_type == DICOM else "result"
        text = f"{noun} {index + 1} {kind}: {outcome.reason}".replace('"', "'")
        text = "".join(c if c.isprintable() else "?" for c in text)
        text = text.encode("ascii", "backslashreplace").decode("ascii")
        response.headers.add("Warning", f'299 tessera "{text}"')
    return response
