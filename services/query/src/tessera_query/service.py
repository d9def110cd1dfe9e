"""The query service: owns the index (queue group ``query``).

It answers search, locate and index requests, and also follows the durable event stream with a
JetStream consumer, so an instance stored while this service was down is indexed when it comes
back (ARCHITECTURE invariant 8). Both paths are idempotent upserts keyed by SOP Instance UID.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import nats.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from opentelemetry import trace

from tessera_common.blobstore import BlobNotFoundError, BlobStore, open_blob_store
from tessera_common.bus import Bus, WithPayload
from tessera_common.errors import ErrorCode, TesseraError
from tessera_common.lru import Lru
from tessera_common.messages import (
    ContentsReply,
    IndexBatchReply,
    IndexBatchRequest,
    IndexDeleteReply,
    IndexDeleteRequest,
    IndexReply,
    IndexRequest,
    InstanceRecord,
    InstanceStoredEvent,
    LocateReply,
    LocateRequest,
    MetadataPage,
    MetadataRequest,
    Ping,
    Pong,
    SearchReply,
    SearchRequest,
    Subject,
)
from tessera_common.metrics import serving_metrics
from tessera_common.settings import Settings
from tessera_common.telemetry import extract_context, setup_tracing, tracer
from tessera_common.traced import TracedBlobStore, traced_index

from .documents import SeriesDocuments
from .index import Index, ThreadedIndex
from .sqlite_index import SqliteIndex

log = logging.getLogger(__name__)
QUEUE = "query"
CONSUMER = "query-indexer"
#: The store asks for indexing right after publishing the event; the consumer lets a fresh
#: event settle this long, so the normal path does not index every instance twice.
CATCH_UP_DELAY = 2.0


#: (SOP Instance UID, SHA-256) pairs a query process remembers having indexed itself.
RECENTLY_INDEXED = 100_000


class QueryService:
    def __init__(
        self, index: Index, blobs: BlobStore, documents: SeriesDocuments | None = None
    ) -> None:
        self._index = index
        self._blobs = blobs
        #: Builds series metadata documents ahead (``TESSERA_PREBUILD_METADATA``).
        self._documents = documents
        #: What this process indexed from STOW requests: the stored event that follows each
        #: one needs no index lookup (skipping is right even if the instance was deleted since).
        self._indexed: Lru[tuple[str, str], bool] = Lru(RECENTLY_INDEXED)

    def _remember(self, records: Sequence[InstanceRecord]) -> None:
        for record in records:
            self._indexed.put((record.sop_uid, record.sha256), True)
        if self._documents is not None:
            self._documents.changed(records)

    async def index(self, request: IndexRequest) -> IndexReply:
        record = request.record
        metadata = record.metadata
        if metadata is None:
            metadata = (await self._read_sidecar(record.sidecar_key)).metadata or {}
        reply = await self._index.upsert(record, metadata)
        self._remember([record])
        return reply

    async def index_batch(self, request: IndexBatchRequest) -> IndexBatchReply:
        """Index a STOW request's instances in one transaction (``upsert_many``); records
        sent without metadata (large ones) have it read from their sidecars first."""

        async def metadata(record: InstanceRecord) -> Mapping[str, Any]:
            if record.metadata is not None:
                return record.metadata
            return (await self._read_sidecar(record.sidecar_key)).metadata or {}

        documents = await asyncio.gather(*(metadata(record) for record in request.records))
        items = list(zip(request.records, documents, strict=True))
        replies = await self._index.upsert_many(items)
        self._remember(request.records)
        return IndexBatchReply(replies=replies)

    async def delete(self, request: IndexDeleteRequest) -> IndexDeleteReply:
        return IndexDeleteReply(instances=await self._index.delete(request.sop_uids))

    async def search(self, request: SearchRequest) -> SearchReply:
        return await self._index.search(request)

    async def locate(self, request: LocateRequest) -> LocateReply:
        reply = await self._index.locate(request)
        if not reply.instances and request.offset == 0:
            raise TesseraError(ErrorCode.NOT_FOUND, _not_found(request))
        return reply

    async def contents(self, request: LocateRequest) -> ContentsReply:
        reply = await self._index.contents(request)
        if reply.count == 0:
            raise TesseraError(ErrorCode.NOT_FOUND, _not_found(request))
        return reply

    async def metadata(self, request: MetadataRequest) -> WithPayload:
        reply = await self._index.metadata_page(request)
        if not reply.documents and request.offset == 0:
            raise TesseraError(ErrorCode.NOT_FOUND, _not_found(request))
        page = MetadataPage(count=len(reply.documents), next_offset=reply.next_offset)
        return WithPayload(page, ",".join(reply.documents).encode())

    async def ping(self, _: Ping) -> Pong:
        await self._index.ping()
        return Pong(service="query", ready=True)

    async def on_event(self, event: InstanceStoredEvent) -> None:
        """Index an instance announced on the event stream unless it is already indexed."""
        if (event.sop_uid, event.sha256) in self._indexed:
            return
        age = (datetime.now(UTC) - datetime.fromisoformat(event.stored_at)).total_seconds()
        if age < CATCH_UP_DELAY:
            await asyncio.sleep(CATCH_UP_DELAY - max(age, 0.0))
        if await self._index.contains(event.sop_uid, event.sha256):
            return
        try:
            record = await self._read_sidecar(event.sidecar_key)
        except TesseraError:
            log.warning("sidecar %s of a stored event is gone; skipped", event.sidecar_key)
            return
        await self._index.upsert(record, record.metadata or {})
        if self._documents is not None:
            self._documents.changed([record])
        # A DELETE may have removed the instance while its sidecar was being read: the store
        # removes the index entry, then the objects, then the entry again, so a sidecar gone
        # now means this entry came too late and must go (docs/DURABILITY.md, Deletion).
        if await self._blobs.head(event.sidecar_key) is None:
            await self._index.delete([event.sop_uid])
            log.info("%s was deleted while catching up; not indexed", event.sop_uid)
            return
        log.info("caught up: indexed %s from the event stream", event.sop_uid)

    async def _read_sidecar(self, key: str) -> InstanceRecord:
        try:
            return InstanceRecord.model_validate_json(await self._blobs.get(key))
        except BlobNotFoundError as exc:
            raise TesseraError(ErrorCode.NOT_FOUND, f"sidecar {key} not found") from exc


def _not_found(request: LocateRequest | MetadataRequest) -> str:
    if request.sop_uid:
        return f"instance {request.sop_uid} not found"
    if request.series_uid:
        return f"series {request.series_uid} not found"
    return f"study {request.study_uid} not found"


async def serve_queries(bus: Bus, service: QueryService) -> None:
    """Answer every ``tessera.v1.query.*`` subject with ``service``, in the ``query`` queue
    group."""
    await bus.serve(Subject.QUERY_INDEX, IndexRequest, service.index, queue=QUEUE)
    await bus.serve(Subject.QUERY_INDEX_BATCH, IndexBatchRequest, service.index_batch, queue=QUEUE)
    await bus.serve(Subject.QUERY_SEARCH, SearchRequest, service.search, queue=QUEUE)
    await bus.serve(Subject.QUERY_LOCATE, LocateRequest, service.locate, queue=QUEUE)
    await bus.serve(Subject.QUERY_CONTENTS, LocateRequest, service.contents, queue=QUEUE)
    await bus.serve(Subject.QUERY_METADATA, MetadataRequest, service.metadata, queue=QUEUE)
    await bus.serve(Subject.QUERY_PING, Ping, service.ping, queue=QUEUE)
    await bus.serve(Subject.QUERY_DELETE, IndexDeleteRequest, service.delete, queue=QUEUE)


CONSUMER_TRACER = tracer(__name__)


async def follow_events(bus: Bus, service: QueryService) -> None:
    """Consume ``events.instance.stored`` with a durable pull consumer, forever."""
    subscription = await bus.jetstream.pull_subscribe(
        Subject.EVENT_INSTANCE_STORED,
        durable=CONSUMER,
        config=ConsumerConfig(
            durable_name=CONSUMER,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=60,
            max_deliver=20,
        ),
    )
    while True:
        try:
            messages = await subscription.fetch(batch=64, timeout=5)
        except nats.errors.TimeoutError:
            # nats-py may turn a cancellation during fetch into a timeout; honour it.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise asyncio.CancelledError from None
            continue
        for message in messages:
            try:
                # The event's span continues the trace of the STOW that published it.
                with CONSUMER_TRACER.start_as_current_span(
                    f"{Subject.EVENT_INSTANCE_STORED} process",
                    context=extract_context(message.headers),
                    kind=trace.SpanKind.CONSUMER,
                    attributes={"messaging.system": "nats", "messaging.operation": "process"},
                ):
                    event = InstanceStoredEvent.model_validate_json(message.data)
                    await service.on_event(event)
            except Exception:
                log.exception("indexing from the event stream failed; will be redelivered")
                await message.nak(delay=2)
                continue
            await message.ack()


async def open_index(settings: Settings) -> Index:
    """The index the settings name: SQLite in the data directory (embedded mode) or MongoDB
    (distributed mode), with its indexes created."""
    if settings.index_backend == "mongodb":
        from .mongo_index import MongoIndex

        mongo = MongoIndex.connect(settings.mongodb_uri, settings.mongodb_database)
        await mongo.ensure_indexes()
        return mongo
    settings.resolved_sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    sqlite = await asyncio.to_thread(SqliteIndex, settings.resolved_sqlite_path)
    return ThreadedIndex(sqlite)


async def run(settings: Settings) -> None:
    """Serve the index until cancelled."""
    setup_tracing("tessera-query")
    blobs = TracedBlobStore(open_blob_store(settings), backend=settings.blob_backend)
    index = traced_index(await open_index(settings), system=settings.index_backend)
    bus = await Bus.connect(
        settings.nats_url, name="tessera-query", request_timeout=settings.request_timeout
    )
    documents = SeriesDocuments(index, blobs) if settings.prebuild_metadata else None
    service = QueryService(index, blobs, documents)
    background: list[asyncio.Task[None]] = []
    try:
        await bus.ensure_streams(settings.stream_replicas)
        await serve_queries(bus, service)
        background.append(asyncio.create_task(follow_events(bus, service)))
        if documents is not None:
            background.append(asyncio.create_task(documents.run()))
        log.info("query service ready (%s index)", settings.index_backend)

        async def ready() -> bool:
            await blobs.ping()
            await index.ping()
            return bus.connected

        async with serving_metrics(settings.metrics_port, host=settings.host, ready=ready):
            await asyncio.Event().wait()
    finally:
        for task in background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await bus.close()
        await index.close()
