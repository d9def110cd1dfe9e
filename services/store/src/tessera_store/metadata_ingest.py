"""Ingest of STOW-RS metadata + bulk data requests (``store.assemble``, PS3.18 §10.5.1.2).

The gateway has streamed the request's parts into ``incoming/`` and sends one
``AssembleRequest`` per metadata part, naming the manifest of bulk data parts. Here each dataset
of the part is planned (``assemble.py``) and written as a PS3.10 file (``part10.py``) into a
temporary file in a worker thread, uploaded to a new ``incoming/`` key and handed to the
``Ingestor`` exactly like an uploaded file, so it is validated, placed, announced and indexed
the same way and stored byte-exact from then on. The request's own parts stay the gateway's,
which deletes them once the store has answered.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import IO, Any, BinaryIO, cast

from pydantic import TypeAdapter

from tessera_common.blobstore import BlobNotFoundError, BlobStore
from tessera_common.errors import ErrorCode, TesseraError, WarningReason
from tessera_common.layout import INCOMING_PREFIX, incoming_key
from tessera_common.messages import (
    AssembleReply,
    AssembleRequest,
    BulkPart,
    IngestRequest,
    InstanceOutcome,
)

from .analysis import InstanceRejectedError
from .assemble import PartIndex, parse_metadata, plan_instance, referenced_parts
from .ingest import Ingestor, failure_for_bus_error
from .part10 import write_instance

log = logging.getLogger(__name__)
#: A metadata part is read whole; the gateway refuses larger ones (413) before they get here.
MAX_METADATA_BYTES = 16 * 1024 * 1024
_MANIFEST = TypeAdapter(list[BulkPart])
_SPOOL_BYTES = 8 * 1024 * 1024
_COPY_CHUNK = 1024 * 1024


class Assembler:
    """Serves ``store.assemble``: builds and ingests the instances of one metadata part, a few
    at a time (``concurrency``)."""

    def __init__(self, blobs: BlobStore, ingestor: Ingestor, *, concurrency: int = 4) -> None:
        self._blobs = blobs
        self._ingestor = ingestor
        self._limit = asyncio.Semaphore(concurrency)

    async def assemble(self, request: AssembleRequest) -> AssembleReply:
        for key in (request.metadata_key, request.manifest_key):
            if key is not None and not key.startswith(INCOMING_PREFIX):
                raise TesseraError(ErrorCode.BAD_REQUEST, "part key outside incoming/")
        if request.metadata_size > MAX_METADATA_BYTES:
            raise TesseraError(ErrorCode.PAYLOAD_TOO_LARGE, "metadata part too large")
        try:
            parts = await self._manifest(request.manifest_key)
            data = await self._blobs.get(request.metadata_key)
        except BlobNotFoundError as exc:
            raise TesseraError(ErrorCode.BAD_REQUEST, "a part of the request is gone") from exc
        try:
            datasets = await asyncio.to_thread(parse_metadata, data, request.metadata_type)
        except InstanceRejectedError as rejected:
            return AssembleReply(outcomes=[_rejected_outcome(rejected)])
        index = PartIndex(parts)
        results = await asyncio.gather(*(self._one(ds, index, request) for ds in datasets))
        referenced = sorted({i for _, used in results for i in used})
        return AssembleReply(outcomes=[outcome for outcome, _ in results], referenced=referenced)

    async def _manifest(self, key: str | None) -> list[BulkPart]:
        if key is None:
            return []
        data = await self._blobs.get(key)
        return await asyncio.to_thread(_MANIFEST.validate_json, data)

    async def _one(
        self, metadata: object, parts: PartIndex, request: AssembleRequest
    ) -> tuple[InstanceOutcome, set[int]]:
        referenced = await asyncio.to_thread(referenced_parts, metadata, parts)
        async with self._limit:
            try:
                built = await asyncio.to_thread(
                    self._build, metadata, parts, request.expected_study_uid
                )
            except InstanceRejectedError as rejected:
                return _rejected_outcome(rejected), referenced
            try:
                key = incoming_key()
                try:
                    await self._blobs.put_stream(key, _file_chunks(built.file))
                except BaseException:
                    await self._blobs.delete(key)
                    raise
            finally:
                built.file.close()
            try:
                outcome = await self._ingestor.ingest(
                    IngestRequest(
                        upload_key=key,
                        size=built.size,
                        sha256=built.sha256,
                        expected_study_uid=request.expected_study_uid,
                    )
                )
            except TesseraError as exc:
                await self._blobs.delete(key)
                failure = failure_for_bus_error(exc)
                return InstanceOutcome(
                    stored=False, failure_reason=int(failure), reason=exc.reason
                ), built.referenced
        if outcome.stored and built.original_attributes:
            outcome = outcome.model_copy(
                update={
                    "warning_reason": int(WarningReason.COERCION_OF_DATA_ELEMENTS),
                    "reason": "the Study Instance UID (0020,000D) was absent and was taken from "
                    "the request URL (recorded in Original Attributes Sequence)",
                    "original_attributes": built.original_attributes,
                }
            )
        return outcome, built.referenced

    def _build(self, metadata: object, parts: PartIndex, expected_study_uid: str | None) -> _Built:
        def read_part(index: int) -> bytes:
            part = parts.parts[index]
            with self._blobs.open_reader(part.key, size=part.size) as fp:
                return fp.read()

        def open_part(index: int) -> IO[bytes]:
            part = parts.parts[index]
            return self._blobs.open_reader(part.key, size=part.size)

        plan = plan_instance(metadata, parts, read_part, expected_study_uid=expected_study_uid)
        spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115
        try:
            write_instance(plan, cast(BinaryIO, spool), open_part)
            size = spool.tell()
            spool.seek(0)
            digest = hashlib.sha256()
            while chunk := spool.read(_COPY_CHUNK):
                digest.update(chunk)
            spool.seek(0)
        except BaseException:
            spool.close()
            raise
        return _Built(
            file=spool,
            size=size,
            sha256=digest.hexdigest(),
            referenced=plan.referenced,
            original_attributes=plan.original_attributes,
        )


@dataclass(slots=True)
class _Built:
    file: IO[bytes]
    size: int
    sha256: str
    referenced: set[int]
    original_attributes: list[dict[str, Any]] | None


async def _file_chunks(file: IO[bytes]) -> AsyncIterator[bytes]:
    while chunk := await asyncio.to_thread(file.read, _COPY_CHUNK):
        yield chunk


def _rejected_outcome(rejected: InstanceRejectedError) -> InstanceOutcome:
    # The reason may quote a BulkDataURI: only the code and a validated UID are logged.
    log.info("refused metadata dataset %s (0x%04X)", rejected.sop_uid, rejected.failure_reason)
    return rejected.outcome()
