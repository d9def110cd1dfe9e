"""Ingest one STOW part: validate, place, record, announce, index (PS3.18 §10.5).

The gateway has already streamed the part into ``incoming/`` (claim check). Here the store

1. parses the header by ranged reads in a worker thread (``analysis.analyze_instance``),
2. applies the duplicate policy when the SOP Instance is already stored (see below),
3. renames the upload to its final key (bytes are never rewritten),
4. writes the sidecar (``InstanceRecord`` with metadata) next to it,
5. publishes ``events.instance.stored`` to JetStream (durable),
6. asks the query service to index it, and only then reports success,

so an instance is visible only once its bytes and metadata are durable (invariant 2) and is
searchable as soon as STOW answers (invariant 3). A rejected part is deleted and reported as a
per-instance failure, never as an exception.

Duplicates (``TESSERA_DUPLICATE_POLICY``): the same bytes stored twice always succeed — a
retried STOW is idempotent and keeps the first ``stored_at``. Other bytes under an existing
SOP Instance UID replace the instance under ``overwrite`` (latest wins) and are refused under
``reject`` with Failure Reason 0111H "Duplicate SOP Instance" (PS3.7 Annex C; PS3.18 Table
I.2-2 admits additional codes). The store learns that an instance exists from its sidecar at
the final key; an instance filed under another study or series is named by the index's reply,
and under ``reject`` the index is then pointed back at it and the newcomer's objects removed.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from enum import StrEnum
from weakref import WeakValueDictionary

import orjson
from pydantic import ValidationError

from tessera_common.blobstore import BlobNotFoundError, BlobStore
from tessera_common.bus import Bus
from tessera_common.errors import ErrorCode, FailureReason, TesseraError
from tessera_common.layout import INCOMING_PREFIX, instance_object_key, sidecar_key
from tessera_common.messages import (
    INLINE_RECORD_BYTES,
    IndexReply,
    IndexRequest,
    IngestRequest,
    InstanceOutcome,
    InstanceRecord,
    InstanceStoredEvent,
    Subject,
)

from .analysis import InstanceAnalysis, InstanceRejectedError, analyze_instance

log = logging.getLogger(__name__)


class DuplicatePolicy(StrEnum):
    """What a re-stored SOP Instance UID with other bytes does (``TESSERA_DUPLICATE_POLICY``)."""

    OVERWRITE = "overwrite"
    REJECT = "reject"


def build_record(
    analysis: InstanceAnalysis, *, size: int, sha256: str, stored_at: str
) -> InstanceRecord:
    """The ``InstanceRecord`` (sidecar content) of an analysed instance at its final keys."""
    uids = (analysis.study_uid, analysis.series_uid, analysis.sop_uid)
    return InstanceRecord(
        study_uid=analysis.study_uid,
        series_uid=analysis.series_uid,
        sop_uid=analysis.sop_uid,
        sop_class_uid=analysis.sop_class_uid,
        transfer_syntax_uid=analysis.transfer_syntax_uid,
        object_key=instance_object_key(*uids),
        sidecar_key=sidecar_key(*uids),
        size=size,
        sha256=sha256,
        stored_at=stored_at,
        frames=analysis.frames,
        metadata=analysis.metadata,
    )


def index_message(record: InstanceRecord) -> InstanceRecord:
    """``record`` as sent in ``query.index``: large metadata travels by reference (the sidecar)
    so the message stays small (ARCHITECTURE invariant 6)."""
    if record.metadata is None or len(orjson.dumps(record.metadata)) <= INLINE_RECORD_BYTES:
        return record
    return record.model_copy(update={"metadata": None})


class InstanceLocks:
    """One lock per SOP Instance UID, shared by ingest and deletion in this store process, so
    that a STOW and a DELETE of one instance never interleave. Unused locks are dropped."""

    def __init__(self) -> None:
        self._locks: WeakValueDictionary[str, asyncio.Lock] = WeakValueDictionary()

    def __call__(self, sop_uid: str) -> asyncio.Lock:
        lock = self._locks.get(sop_uid)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[sop_uid] = lock
        return lock


class Ingestor:
    def __init__(
        self,
        blobs: BlobStore,
        bus: Bus,
        *,
        duplicates: DuplicatePolicy | str = DuplicatePolicy.OVERWRITE,
        locks: InstanceLocks | None = None,
    ) -> None:
        self._blobs = blobs
        self._bus = bus
        self._duplicates = DuplicatePolicy(duplicates)
        self._lock = locks or InstanceLocks()

    async def ingest(self, request: IngestRequest) -> InstanceOutcome:
        if not request.upload_key.startswith(INCOMING_PREFIX):
            raise TesseraError(ErrorCode.BAD_REQUEST, "upload key outside incoming/")
        try:
            analysis = await asyncio.to_thread(self._analyze, request)
        except InstanceRejectedError as rejected:
            await self._blobs.delete(request.upload_key)
            log.info(
                "rejected upload %s: %s (0x%04X)",
                request.upload_key,
                rejected.reason,
                rejected.failure_reason,
            )
            return rejected.outcome()
        except BlobNotFoundError as exc:
            raise TesseraError(
                ErrorCode.BAD_REQUEST, f"upload {request.upload_key} does not exist"
            ) from exc
        # One ingest of a SOP Instance at a time in this process, so that two different
        # versions racing in never both pass the duplicate check.
        async with self._lock(analysis.sop_uid):
            record = build_record(
                analysis,
                size=request.size,
                sha256=request.sha256,
                stored_at=datetime.now(UTC).isoformat(),
            )
            existing = await self._existing(record)
            if existing is not None and not _same_bytes(existing, record):
                if self._duplicates is DuplicatePolicy.REJECT:
                    await self._blobs.delete(request.upload_key)
                    return _duplicate(record)
            elif existing is not None:
                record = record.model_copy(update={"stored_at": existing.stored_at})
            await self._place(request, record, existing)
            await self._announce(record)
            if not await self._index(record):
                return _duplicate(record)
        return InstanceOutcome(
            stored=True,
            sop_class_uid=record.sop_class_uid,
            sop_instance_uid=record.sop_uid,
            study_uid=record.study_uid,
            series_uid=record.series_uid,
            warning_reason=analysis.warning_reason,
            reason=analysis.warning or "",
        )

    def _analyze(self, request: IngestRequest) -> InstanceAnalysis:
        with self._blobs.open_reader(request.upload_key, size=request.size) as fp:
            return analyze_instance(
                fp, size=request.size, expected_study_uid=request.expected_study_uid
            )

    async def _existing(self, record: InstanceRecord) -> InstanceRecord | None:
        """The instance already stored at ``record``'s keys: its sidecar, provided the object
        it describes is there too. A missing, unreadable or dangling sidecar is no instance
        (storing the new bytes repairs it)."""
        existing = await self._read_record(record.sidecar_key)
        if existing is None:
            return None
        info = await self._blobs.head(record.object_key)
        if info is None or info.size != existing.size:
            return None
        return existing

    async def _place(
        self, request: IngestRequest, record: InstanceRecord, existing: InstanceRecord | None
    ) -> None:
        # The same bytes are renamed over the stored object all the same: it costs little and
        # repairs an object an earlier, interrupted overwrite may have left.
        await self._blobs.rename(request.upload_key, record.object_key)
        if existing is None or existing != record:
            await self._blobs.put(record.sidecar_key, record.model_dump_json().encode())

    async def _announce(self, record: InstanceRecord) -> None:
        event = InstanceStoredEvent(
            study_uid=record.study_uid,
            series_uid=record.series_uid,
            sop_uid=record.sop_uid,
            sop_class_uid=record.sop_class_uid,
            sidecar_key=record.sidecar_key,
            sha256=record.sha256,
            stored_at=record.stored_at,
        )
        await self._bus.publish_event(
            Subject.EVENT_INSTANCE_STORED, event, msg_id=f"{record.sop_uid}:{record.sha256}"
        )

    async def _index(self, record: InstanceRecord) -> bool:
        """Index ``record``; False when it was refused as a duplicate of an instance filed
        under another study or series (``reject``): that one is indexed again and the
        newcomer's objects are removed."""
        reply = await self._request_index(record)
        stale = [
            key
            for key in (reply.previous_object_key, reply.previous_sidecar_key)
            if key and key not in {record.object_key, record.sidecar_key}
        ]
        previous = None
        if stale and self._duplicates is DuplicatePolicy.REJECT and reply.previous_sidecar_key:
            previous = await self._read_record(reply.previous_sidecar_key)
        if previous is None:
            for key in stale:
                await self._blobs.delete(key)
            return True
        # The sidecar goes first: the event stream's catch-up then finds nothing to index.
        await self._blobs.delete(record.sidecar_key)
        await self._request_index(previous)
        await self._blobs.delete(record.object_key)
        return False

    async def _read_record(self, key: str) -> InstanceRecord | None:
        try:
            data = await self._blobs.get(key)
            return await asyncio.to_thread(InstanceRecord.model_validate_json, data)
        except (BlobNotFoundError, ValidationError):
            return None

    async def _request_index(self, record: InstanceRecord) -> IndexReply:
        return await self._bus.request(
            Subject.QUERY_INDEX, IndexRequest(record=index_message(record)), IndexReply
        )


def _same_bytes(existing: InstanceRecord, record: InstanceRecord) -> bool:
    return existing.sha256 == record.sha256 and existing.size == record.size


def _duplicate(record: InstanceRecord) -> InstanceOutcome:
    log.info("refused duplicate SOP Instance %s (other bytes)", record.sop_uid)
    return InstanceOutcome(
        stored=False,
        sop_class_uid=record.sop_class_uid,
        sop_instance_uid=record.sop_uid,
        study_uid=record.study_uid,
        series_uid=record.series_uid,
        failure_reason=int(FailureReason.DUPLICATE_SOP_INSTANCE),
        reason=(
            f"SOP Instance {record.sop_uid} is already stored with other content and this "
            "archive refuses duplicates (PS3.7 Annex C, 0111H); store it under a new SOP "
            "Instance UID, or delete the stored instance first"
        ),
    )


def failure_for_bus_error(error: TesseraError) -> FailureReason:
    """The Failure Reason reported for an instance whose ingest failed inside Tessera."""
    if error.code in {ErrorCode.SERVICE_UNAVAILABLE, ErrorCode.TIMEOUT}:
        return FailureReason.OUT_OF_RESOURCES
    return FailureReason.PROCESSING_FAILURE
