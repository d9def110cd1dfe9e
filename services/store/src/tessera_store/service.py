"""The store service: sole writer of instance objects (queue group ``store``)."""

from __future__ import annotations

import asyncio
import logging
import warnings

import pydicom.config

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

from .delete import Deleter
from .ingest import PLACEMENTS_LOCAL, PLACEMENTS_REMOTE, Ingestor, InstanceLocks
from .metadata_ingest import Assembler
from .orphans import collecting_orphans

log = logging.getLogger(__name__)
QUEUE = "store"
#: ``store.ingest_batch`` requests handled at once; each ingests its parts concurrently.
INGEST_BATCH_CONCURRENCY = 8


def quiet_pydicom() -> None:
    """pydicom's validation warnings quote attribute values (patient names, birth dates…);
    they must never reach a log (ARCHITECTURE invariant 10). Our own validation reports the
    problems that matter, without values."""
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", module=r"pydicom(\..*)?")


async def run(settings: Settings) -> None:
    """Serve ingest requests until cancelled."""
    setup_tracing("tessera-store")
    quiet_pydicom()
    blobs = TracedBlobStore(open_blob_store(settings), backend=settings.blob_backend)
    bus = await Bus.connect(
        settings.nats_url, name="tessera-store", request_timeout=settings.request_timeout
    )
    try:
        await bus.ensure_streams(settings.stream_replicas)
        locks = InstanceLocks()
        ingestor = Ingestor(
            blobs,
            bus,
            duplicates=settings.duplicate_policy,
            locks=locks,
            placements=PLACEMENTS_LOCAL if settings.blob_backend == "local" else PLACEMENTS_REMOTE,
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
        log.info("store service ready")

        async def ready() -> bool:
            await blobs.ping()
            return bus.connected

        async with (
            serving_metrics(settings.metrics_port, host=settings.host, ready=ready),
            collecting_orphans(settings, blobs),
        ):
            await asyncio.Event().wait()
    finally:
        await bus.close()
