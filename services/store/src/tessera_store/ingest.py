"""Ingest one STOW part: validate, place, record, announce, index (PS3.18 §10.5).

The gateway has already streamed the part into ``incoming/`` (claim check). Here the store

1. parses the header by ranged reads in a worker thread (``analysis.analyze_instance``),
2. renames the upload to its final key (bytes are never rewritten),
3. writes the sidecar (``InstanceRecord`` with metadata) next to it,
4. publishes ``events.instance.stored`` to JetStream (durable),
5. asks the query service to index it, and only then reports success,

so an instance is visible only once its bytes and metadata are durable (invariant 2) and is
searchable as soon as STOW answers (invariant 3). A rejected part is deleted and reported as a
per-instance failure, never as an exception.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import orjson

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


class Ingestor:
    def __init__(self, blobs: BlobStore, bus: Bus) -> None:
        self._blobs = blobs
        self._bus = bus

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
            return InstanceOutcome(
                stored=False,
                sop_class_uid=rejected.sop_class_uid,
                sop_instance_uid=rejected.sop_uid,
                study_uid=rejected.study_uid,
                series_uid=rejected.series_uid,
                failure_reason=int(rejected.failure_reason),
                reason=rejected.reason,
            )
        except BlobNotFoundError as exc:
            raise TesseraError(
                ErrorCode.BAD_REQUEST, f"upload {request.upload_key} does not exist"
            ) from exc
        record = await self._place(request, analysis)
        await self._announce(record)
        await self._index(record, analysis)
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

    async def _place(self, request: IngestRequest, analysis: InstanceAnalysis) -> InstanceRecord:
        uids = (analysis.study_uid, analysis.series_uid, analysis.sop_uid)
        record = InstanceRecord(
            study_uid=analysis.study_uid,
            series_uid=analysis.series_uid,
            sop_uid=analysis.sop_uid,
            sop_class_uid=analysis.sop_class_uid,
            transfer_syntax_uid=analysis.transfer_syntax_uid,
            object_key=instance_object_key(*uids),
            sidecar_key=sidecar_key(*uids),
            size=request.size,
            sha256=request.sha256,
            stored_at=datetime.now(UTC).isoformat(),
            frames=analysis.frames,
            metadata=analysis.metadata,
        )
        await self._blobs.rename(request.upload_key, record.object_key)
        await self._blobs.put(record.sidecar_key, record.model_dump_json().encode())
        return record

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

    async def _index(self, record: InstanceRecord, analysis: InstanceAnalysis) -> None:
        inline = len(orjson.dumps(analysis.metadata)) <= INLINE_RECORD_BYTES
        message = record if inline else record.model_copy(update={"metadata": None})
        reply = await self._bus.request(
            Subject.QUERY_INDEX, IndexRequest(record=message), IndexReply
        )
        stale = [
            key
            for key in (reply.previous_object_key, reply.previous_sidecar_key)
            if key and key not in {record.object_key, record.sidecar_key}
        ]
        for key in stale:
            await self._blobs.delete(key)


def failure_for_bus_error(error: TesseraError) -> FailureReason:
    """The Failure Reason reported for an instance whose ingest failed inside Tessera."""
    if error.code in {ErrorCode.SERVICE_UNAVAILABLE, ErrorCode.TIMEOUT}:
        return FailureReason.OUT_OF_RESOURCES
    return FailureReason.PROCESSING_FAILURE
