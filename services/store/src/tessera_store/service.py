"""The store service: sole writer of instance objects (queue group ``store``)."""

from __future__ import annotations

import asyncio
import logging
import os

from tessera_common.blobstore import open_blob_store
from tessera_common.bus import Bus
from tessera_common.messages import (
    AssembleRequest,
    DeleteRequest,
    IngestBatchRequest,
    IngestRequest,
    Ping,
    Pong,
    Subject,
)
from tessera_common.metrics import serving_metrics
from tessera_common.settings import Settings
from tessera_common.telemetry import setup_tracing
from tessera_common.traced import TracedBlobStore
from tessera_common.workers import per_cpu

from .analysis import quiet_pydicom
from .analysis_pool import AnalysisPool
from .delete import Deleter
from .ingest import PLACEMENTS_LOCAL, PLACEMENTS_REMOTE, Ingestor
from .locks import ClusterLocks, InstanceLocks, ProcessLocks
from .metadata_ingest import Assembler
from .orphans import collecting_orphans

log = logging.getLogger(__name__)
QUEUE = "store"
#: ``store.ingest_batch`` requests handled at once; each ingests its parts concurrently.
INGEST_BATCH_CONCURRENCY = 8


def analysis_pool(settings: Settings) -> AnalysisPool | None:
    """``TESSERA_ANALYSIS_WORKERS`` processes, or one per CPU (up to 4) when it is 0; none on a
    single CPU unless asked for (a pool there adds copying and no parallelism)."""
    if settings.analysis_workers == 0 and (os.cpu_count() or 1) < 2:
        return None
    return AnalysisPool(settings, per_cpu(settings.analysis_workers), quiet_pydicom)


async def run(settings: Settings) -> None:
    """Serve ingest requests until cancelled."""
    setup_tracing("tessera-store")
    quiet_pydicom()
    blobs = TracedBlobStore(open_blob_store(settings), backend=settings.blob_backend)
    bus = await Bus.connect(
        settings.nats_url, name="tessera-store", request_timeout=settings.request_timeout
    )
    pool: AnalysisPool | None = None
    try:
        await bus.ensure_streams(settings.stream_replicas)
        locks: InstanceLocks = ProcessLocks()
        if settings.instance_locks == "cluster":
            locks = await ClusterLocks.open(bus, replicas=settings.stream_replicas)
        pool = analysis_pool(settings)
        if pool is not None:
            await pool.warm_up()
        ingestor = Ingestor(
            blobs,
            bus,
            duplicates=settings.duplicate_policy,
            locks=locks,
            placements=PLACEMENTS_LOCAL if settings.blob_backend == "local" else PLACEMENTS_REMOTE,
            analysis_pool=pool,
        )
        deleter = Deleter(blobs, bus, locks)

        async def ping(_: Ping) -> Pong:
            await blobs.ping()
            return Pong(service="store", ready=True)

        await bus.serve(Subject.STORE_INGEST, IngestRequest, ingestor.ingest, queue=QUEUE)
        await bus.serve(
            Subject.STORE_INGEST_BATCH,
            IngestBatchRequest,
            ingestor.ingest_batch,
            queue=QUEUE,
            concurrency=INGEST_BATCH_CONCURRENCY,
        )
        await bus.serve(Subject.STORE_DELETE, DeleteRequest, deleter.delete, queue=QUEUE)
        assembler = Assembler(blobs, ingestor)
        await bus.serve(Subject.STORE_ASSEMBLE, AssembleRequest, assembler.assemble, queue=QUEUE)
        await bus.serve(Subject.STORE_PING, Ping, ping, queue=QUEUE)
        log.info(
            "store service ready (%s)",
            f"{pool.workers} analysis workers" if pool else "analysis in threads",
        )

        async def ready() -> bool:
            await blobs.ping()
            return bus.connected

        async with (
            serving_metrics(settings.metrics_port, host=settings.host, ready=ready),
            collecting_orphans(settings, blobs),
        ):
            await asyncio.Event().wait()
    finally:
        if pool is not None:
            pool.shutdown()
        await bus.close()
