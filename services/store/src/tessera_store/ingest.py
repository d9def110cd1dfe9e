"""Ingest STOW parts: validate, place, record, announce, index (PS3.18 §10.5).

The gateway has already streamed the parts into ``incoming/`` (claim check) and sends them
one (``store.ingest``) or a batch of a request's parts (``store.ingest_batch``) at a time.
Here the store

1. parses the header by ranged reads in a worker thread (``analysis.analyze_instance``),
2. applies the duplicate policy when the SOP Instance is already stored (see below),
3. renames the upload to its final key (bytes are never rewritten),
4. writes the sidecar (``InstanceRecord`` with metadata) next to it,
5. publishes ``events.instance.stored`` to JetStream (durable),
6. asks the query service to index it, and only then reports success,

so an instance is visible only once its bytes and metadata are durable (invariant 2) and is
searchable as soon as STOW answers (invariant 3). A rejected part is deleted and reported as a
per-instance failure, never as an exception.

A batch goes through those steps together, to pay the fixed costs once per batch rather than
once per instance: the analyses run one after the other in one worker-thread call (parsing
holds the GIL, so parallel threads would only contend for it), the existence checks likewise,
the events are published concurrently (each still acknowledged by JetStream before the
answer), and the instances are indexed by one ``query.index_batch`` request (one SQLite
transaction). The order of the steps per instance is unchanged, so is what a kill at any
moment leaves behind.

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
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import ValidationError

from tessera_common.blobstore import BlobNotFoundError, BlobStore
from tessera_common.bus import Bus
from tessera_common.errors import ErrorCode, FailureReason, TesseraError
from tessera_common.layout import INCOMING_PREFIX, instance_object_key, sidecar_key
from tessera_common.messages import (
    IndexBatchReply,
    IndexBatchRequest,
    IndexReply,
    IndexRequest,
    IngestBatchReply,
    IngestBatchRequest,
    IngestRequest,
    InstanceOutcome,
    InstanceRecord,
    InstanceStoredEvent,
    Subject,
)

from .analysis import InstanceAnalysis, InstanceRejectedError, analyze_instance
from .analysis_pool import AnalysisPool
from .batching import index_message as index_message  # re-exported (maintenance.py)
from .batching import index_pages, rounds, settled
from .locks import InstanceLocks, ProcessLocks

log = logging.getLogger(__name__)
#: Instances of a batch moved into place (rename, sidecar) at once. On a local filesystem the
#: renames and file creations of one directory serialize on its lock, and concurrent ones
#: spin for it (CPU spent for nothing); an object store copies server-side, in parallel.
PLACEMENTS_LOCAL = 1
PLACEMENTS_REMOTE = 8
#: Instances one worker-thread call analyses, one after the other (see ``_prepare_all``).
ANALYSIS_CHUNK = 16


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


class Ingestor:
    def __init__(
        self,
        blobs: BlobStore,
        bus: Bus,
        *,
        duplicates: DuplicatePolicy | str = DuplicatePolicy.OVERWRITE,
        locks: InstanceLocks | None = None,
        placements: int = PLACEMENTS_REMOTE,
        analysis_pool: AnalysisPool | None = None,
    ) -> None:
        """``placements``: instances of a batch moved into place at once; use
        ``PLACEMENTS_LOCAL`` on a local filesystem. ``analysis_pool``: worker processes to
        analyse uploads in (else this process's threads)."""
        self._blobs = blobs
        self._bus = bus
        self._duplicates = DuplicatePolicy(duplicates)
        self._locks = locks or ProcessLocks()
        self._placements = placements
        self._pool = analysis_pool

    async def ingest(self, request: IngestRequest) -> InstanceOutcome:
        """Ingest one part (``store.ingest``, and the assembler's instances)."""
        (result,) = await self._ingest_all([request])
        if isinstance(result, Exception):
            raise result
        return result

    async def ingest_batch(self, request: IngestBatchRequest) -> IngestBatchReply:
        """Ingest the parts of one STOW request together (``store.ingest_batch``; see the
        module docstring); one outcome per part, each answered only once durable and indexed."""
        results = await self._ingest_all(request.parts)
        return IngestBatchReply(outcomes=[_as_outcome(result) for result in results])

    async def _ingest_all(
        self, requests: Sequence[IngestRequest]
    ) -> list[InstanceOutcome | Exception]:
        prepared = await self._prepare_all(requests)
        results: list[InstanceOutcome | Exception] = []
        pending: list[tuple[int, IngestRequest, InstanceAnalysis]] = []
        for position, (request, analysis) in enumerate(zip(requests, prepared, strict=True)):
            if isinstance(analysis, InstanceAnalysis):
                pending.append((position, request, analysis))
                results.append(_PENDING)
            else:
                results.append(analysis)
        for round_ in rounds(pending, key=lambda item: item[2].sop_uid):
            outcomes = await self._store_round(
                [(request, analysis) for _, request, analysis in round_]
            )
            for (position, _, _), outcome in zip(round_, outcomes, strict=True):
                results[position] = outcome
        return results

    async def _prepare_all(
        self, requests: Sequence[IngestRequest]
    ) -> list[InstanceAnalysis | InstanceOutcome | Exception]:
        """Analyse the uploads in the analysis pool's processes, or else in worker threads,
        ``ANALYSIS_CHUNK`` instances per thread call: parsing is Python code that holds the
        GIL, so more threads than that only contend for it (and the event loop with them). A
        refused instance is deleted and becomes its outcome."""
        valid = [r for r in requests if r.upload_key.startswith(INCOMING_PREFIX)]
        results = await self._pool.analyze(valid) if self._pool is not None and valid else None
        if results is None:
            chunks = [valid[i : i + ANALYSIS_CHUNK] for i in range(0, len(valid), ANALYSIS_CHUNK)]
            results = [
                result
                for analysed_chunk in await asyncio.gather(
                    *(asyncio.to_thread(self._analyze_many, chunk) for chunk in chunks)
                )
                for result in analysed_chunk
            ]
        analysed = iter(results)
        prepared: list[InstanceAnalysis | InstanceOutcome | Exception] = []
        for request in requests:
            if not request.upload_key.startswith(INCOMING_PREFIX):
                prepared.append(TesseraError(ErrorCode.BAD_REQUEST, "upload key outside incoming/"))
                continue
            result = next(analysed)
            if isinstance(result, InstanceRejectedError):
                try:
                    await self._blobs.delete(request.upload_key)
                except Exception as exc:
                    prepared.append(exc)
                    continue
                log.info(
                    "rejected upload %s: %s (0x%04X)",
                    request.upload_key,
                    result.reason,
                    result.failure_reason,
                )
                prepared.append(result.outcome())
            elif isinstance(result, BlobNotFoundError):
                prepared.append(
                    TesseraError(
                        ErrorCode.BAD_REQUEST, f"upload {request.upload_key} does not exist"
                    )
                )
            else:
                prepared.append(result)
        return prepared

    async def _store_round(
        self, items: Sequence[tuple[IngestRequest, InstanceAnalysis]]
    ) -> list[InstanceOutcome | Exception]:
        """Place, announce and index instances of distinct SOP Instance UIDs, holding their
        locks throughout (``locks``): one ingest of a SOP Instance at a time, so that two
        versions racing in never both pass the duplicate check nor interleave their writes."""
        async with self._locks.hold(analysis.sop_uid for _, analysis in items):
            stored_at = datetime.now(UTC).isoformat()
            records = [
                build_record(
                    analysis, size=request.size, sha256=request.sha256, stored_at=stored_at
                )
                for request, analysis in items
            ]
            found = await asyncio.to_thread(self._existing_many, records)
            limit = asyncio.Semaphore(self._placements)

            async def place(
                request: IngestRequest,
                record: InstanceRecord,
                existing: InstanceRecord | Exception | None,
            ) -> InstanceRecord | InstanceOutcome:
                async with limit:
                    return await self._place_one(request, record, existing)

            placed = await settled(
                *(
                    place(request, record, existing)
                    for (request, _), record, existing in zip(items, records, found, strict=True)
                )
            )
            records = [record for record in placed if isinstance(record, InstanceRecord)]
            announced = await settled(*(self._announce(record) for record in records))
            done: dict[str, bool | Exception] = {
                record.sop_uid: failure
                for record, failure in zip(records, announced, strict=True)
                if isinstance(failure, Exception)
            }
            ready = [record for record in records if record.sop_uid not in done]
            replies = await self._index_all(ready)
            finished = await settled(
                *(self._settle(record, replies[record.sop_uid]) for record in ready)
            )
            done.update(zip((record.sop_uid for record in ready), finished, strict=True))
        outcomes: list[InstanceOutcome | Exception] = []
        for (_, analysis), result in zip(items, placed, strict=True):
            if not isinstance(result, InstanceRecord):
                outcomes.append(result)
                continue
            stored = done[result.sop_uid]
            if isinstance(stored, Exception):
                outcomes.append(stored)
            elif not stored:
                outcomes.append(_duplicate(result))
            else:
                outcomes.append(
                    InstanceOutcome(
                        stored=True,
                        sop_class_uid=result.sop_class_uid,
                        sop_instance_uid=result.sop_uid,
                        study_uid=result.study_uid,
                        series_uid=result.series_uid,
                        warning_reason=analysis.warning_reason,
                        reason=analysis.warning or "",
                    )
                )
        return outcomes

    async def _place_one(
        self,
        request: IngestRequest,
        record: InstanceRecord,
        existing: InstanceRecord | Exception | None,
    ) -> InstanceRecord | InstanceOutcome:
        """Apply the duplicate policy, then put the object and its sidecar at their keys; the
        record placed, or the refusal of a duplicate (``reject``)."""
        if isinstance(existing, Exception):
            raise existing
        if existing is not None and not _same_bytes(existing, record):
            if self._duplicates is DuplicatePolicy.REJECT:
                await self._blobs.delete(request.upload_key)
                return _duplicate(record)
        elif existing is not None:
            record = record.model_copy(update={"stored_at": existing.stored_at})
        await self._place(request, record, existing)
        return record

    def _existing_many(
        self, records: Sequence[InstanceRecord]
    ) -> list[InstanceRecord | Exception | None]:
        """``_existing`` of each record, in one worker-thread call: synchronous reads cost
        less than one asynchronous object store call each (a new instance is one 404)."""
        results: list[InstanceRecord | Exception | None] = []
        for record in records:
            try:
                results.append(self._existing(record))
            except Exception as exc:
                results.append(exc)
        return results

    def _existing(self, record: InstanceRecord) -> InstanceRecord | None:
        """The instance already stored at ``record``'s keys: its sidecar, provided the object
        it describes is there too. A missing, unreadable or dangling sidecar is no instance
        (storing the new bytes repairs it)."""
        try:
            with self._blobs.open_reader(record.sidecar_key) as fp:
                existing = InstanceRecord.model_validate_json(fp.read())
            with self._blobs.open_reader(record.object_key) as fp:
                size = fp.seek(0, 2)
        except (BlobNotFoundError, ValidationError):
            return None
        return existing if size == existing.size else None

    def _analyze_many(
        self, requests: Sequence[IngestRequest]
    ) -> list[InstanceAnalysis | Exception]:
        results: list[InstanceAnalysis | Exception] = []
        for request in requests:
            try:
                results.append(self._analyze(request))
            except Exception as exc:
                results.append(exc)
        return results

    def _analyze(self, request: IngestRequest) -> InstanceAnalysis:
        with self._blobs.open_reader(request.upload_key, size=request.size) as fp:
            return analyze_instance(
                fp, size=request.size, expected_study_uid=request.expected_study_uid
            )

    async def _place(
        self, request: IngestRequest, record: InstanceRecord, existing: InstanceRecord | None
    ) -> None:
        # The same bytes are renamed over the stored object all the same: it costs little and
        # repairs an object an earlier, interrupted overwrite may have left.
        await self._blobs.rename(request.upload_key, record.object_key)
        if existing is None or existing != record:
            await self._blobs.put(record.sidecar_key, record.model_dump_json().encode())

    async def _announce(self, record: InstanceRecord) -> None:
        event = InstanceStoredEvent.of(record)
        await self._bus.publish_event(
            Subject.EVENT_INSTANCE_STORED, event, msg_id=f"{record.sop_uid}:{record.sha256}"
        )

    async def _index_all(
        self, records: Sequence[InstanceRecord]
    ) -> dict[str, IndexReply | Exception]:
        """Index ``records`` (distinct SOP Instance UIDs) with ``query.index_batch`` requests
        below ``PAGE_BYTES`` each; the reply (or failure) per SOP Instance UID. When a batch
        fails for another reason than an absent or slow query service, its records are
        indexed one by one, so that one bad record does not fail the others."""
        replies: dict[str, IndexReply | Exception] = {}
        for page in index_pages(records):
            sop_uids = [record.sop_uid for record, _ in page]
            try:
                if len(page) == 1:
                    # One record travels as ``query.index``, the same work in a smaller message.
                    single = await self._request_index(page[0][0])
                    reply = IndexBatchReply(replies=[single])
                else:
                    reply = await self._bus.request(
                        Subject.QUERY_INDEX_BATCH,
                        IndexBatchRequest(records=[message for _, message in page]),
                        IndexBatchReply,
                    )
                if len(reply.replies) != len(page):
                    raise TesseraError(ErrorCode.INTERNAL, "index batch reply of another length")
                replies.update(zip(sop_uids, reply.replies, strict=True))
            except TesseraError as exc:
                if exc.code in {ErrorCode.TIMEOUT, ErrorCode.SERVICE_UNAVAILABLE}:
                    replies.update((sop_uid, exc) for sop_uid in sop_uids)
                    continue
                if len(page) == 1:
                    replies[sop_uids[0]] = exc
                    continue
                singles = await settled(*(self._request_index(record) for record, _ in page))
                replies.update(zip(sop_uids, singles, strict=True))
        return replies

    async def _settle(self, record: InstanceRecord, reply: IndexReply | Exception) -> bool:
        """Finish indexing ``record``: delete the objects of the instance it replaced under
        other keys. False when it was refused as a duplicate of an instance filed under
        another study or series (``reject``): that one is indexed again and the newcomer's
        objects are removed."""
        if isinstance(reply, Exception):
            raise reply
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


_PENDING = InstanceOutcome(stored=False, reason="not ingested")


def _as_outcome(result: InstanceOutcome | Exception) -> InstanceOutcome:
    """A part's outcome in a batch reply; an error inside Tessera fails that part only."""
    if isinstance(result, InstanceOutcome):
        return result
    if isinstance(result, TesseraError):
        failure = failure_for_bus_error(result)
        return InstanceOutcome(stored=False, failure_reason=int(failure), reason=result.reason)
    log.error("ingest of a part failed", exc_info=result)
    return InstanceOutcome(
        stored=False,
        failure_reason=int(FailureReason.PROCESSING_FAILURE),
        reason=f"{type(result).__name__} while storing the instance; retry later",
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
