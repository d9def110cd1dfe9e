"""A store and a query service over real backends, for the durability tests.

``running_archive`` starts a private nats-server, opens the index (SQLite) and serves the query
service's subjects on it, and gives an ``Ingestor`` that stores through the real ingest path:
upload to ``incoming/``, then ``store.ingest``'s handler. ``synthetic_instance`` writes small
PS3.10 files whose UIDs and attributes the tests choose.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from tessera.natsd import NatsServer
from tessera_common.blobstore import BlobStore
from tessera_common.bus import Bus
from tessera_common.layout import incoming_key
from tessera_common.messages import (
    IngestBatchRequest,
    IngestRequest,
    InstanceOutcome,
    QueryLevel,
    SearchRequest,
)
from tessera_common.qido import parse_search
from tessera_common.settings import Settings
from tessera_query.index import Index
from tessera_query.service import QueryService, open_index, serve_queries
from tessera_store.ingest import DuplicatePolicy, Ingestor

ROOT = "1.2.826.0.1.3680043.8.498.77"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def study_uid(study: int) -> str:
    return f"{ROOT}.{study}"


def series_uid(study: int, series: int) -> str:
    return f"{ROOT}.{study}.{series}"


def sop_uid(study: int, series: int, instance: int) -> str:
    return f"{ROOT}.{study}.{series}.{instance}"


def synthetic_instance(
    study: int, series: int, instance: int, *, comment: str = "", study_of: int | None = None
) -> bytes:
    """A small CT image (4 by 4, 16 bits). ``comment`` changes the bytes, not the UIDs;
    ``study_of`` files the same SOP Instance under another study (and series)."""
    filed = study if study_of is None else study_of
    ds = Dataset()
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid(study, series, instance)
    ds.StudyInstanceUID = study_uid(filed)
    ds.SeriesInstanceUID = series_uid(filed, series)
    ds.PatientName = f"Durable^Patient{study}"
    ds.PatientID = f"DUR{study}"
    ds.StudyDate = f"2024010{study}"
    ds.StudyTime = "101500"
    ds.AccessionNumber = f"ACC{study}"
    ds.StudyID = str(study)
    ds.Modality = "CT"
    ds.SeriesNumber = series
    ds.InstanceNumber = instance
    ds.ImageComments = comment or f"instance {instance}"
    ds.Rows = 4
    ds.Columns = 4
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(range(32))
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


#: Two studies, two series each, three instances per series.
LAYOUT = [(study, series, n) for study in (1, 2) for series in (1, 2) for n in (1, 2, 3)]


@dataclass
class Archive:
    settings: Settings
    blobs: BlobStore
    bus: Bus
    index: Index
    ingestor: Ingestor

    async def stow(self, data: bytes) -> InstanceOutcome:
        """Store one PS3.10 file as STOW-RS does: upload, then ingest."""
        key = incoming_key()
        await self.blobs.put(key, data)
        request = IngestRequest(
            upload_key=key, size=len(data), sha256=hashlib.sha256(data).hexdigest()
        )
        return await self.ingestor.ingest(request)

    async def stow_batch(self, files: Sequence[bytes]) -> list[InstanceOutcome]:
        """Store PS3.10 files as one STOW-RS request does: upload each, ingest them together
        (``store.ingest_batch``)."""
        parts = []
        for data in files:
            key = incoming_key()
            await self.blobs.put(key, data)
            parts.append(
                IngestRequest(
                    upload_key=key, size=len(data), sha256=hashlib.sha256(data).hexdigest()
                )
            )
        reply = await self.ingestor.ingest_batch(IngestBatchRequest(parts=parts))
        return reply.outcomes


async def search_all(index: Index, level: QueryLevel, params: Sequence[tuple[str, str]]) -> Any:
    """Every result of a QIDO-RS query, page after page, as QIDO-RS would return them."""
    request: SearchRequest = parse_search(level, [*params, ("includefield", "all")])
    results: list[Any] = []
    while True:
        reply = await index.search(request)
        results.extend(reply.results)
        if reply.next_offset is None:
            return results
        request = request.model_copy(update={"offset": reply.next_offset})


@asynccontextmanager
async def running_archive(
    tmp_path: Path,
    blobs: BlobStore,
    *,
    settings: Settings | None = None,
    duplicates: DuplicatePolicy = DuplicatePolicy.OVERWRITE,
) -> AsyncIterator[Archive]:
    """NATS + the query service (SQLite under ``tmp_path``) + an ``Ingestor`` on ``blobs``."""
    server = NatsServer(tmp_path / "nats")
    await server.start()
    base = settings or Settings(data_dir=tmp_path, blob_root=tmp_path / "objects")
    configured = base.model_copy(update={"nats_url": server.url})
    bus = await Bus.connect(server.url, name="durability-test", request_timeout=10)
    index = await open_index(configured)
    try:
        await bus.ensure_streams()
        service = QueryService(index, blobs)
        await serve_queries(bus, service)
        ingestor = Ingestor(blobs, bus, duplicates=duplicates)
        yield Archive(configured, blobs, bus, index, ingestor)
    finally:
        await bus.close()
        await index.close()
        await server.stop()
