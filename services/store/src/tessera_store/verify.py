"""``tessera verify``: prove that every stored object is still the bytes that were stored.

ARCHITECTURE invariant 1: a SHA-256 of each stored object is recorded (in its sidecar, and in
the index) and verifiable. For every instance under ``studies/`` this streams the object,
hashes it and compares digest and size with the sidecar's record — and with the index's, when
the index can be reached. Missing objects, missing or unreadable sidecars, instances the index
does not know or knows differently are problems too. Nothing is modified.

Verification only reads, so it may run while Tessera runs. An instance re-stored while it is
being hashed is checked again against its new record before a mismatch is reported.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from pydantic import ValidationError

from tessera_common.blobstore import BlobNotFoundError, BlobStore, open_blob_store
from tessera_common.messages import InstanceRecord, LocateRequest
from tessera_common.settings import Settings

from .catalog import StoredInstance, stored_instances
from .maintenance import (
    BusIndex,
    InstanceLocator,
    MaintainedIndex,
    MaintenanceRefusedError,
    OpenIndex,
    Problem,
    Progress,
    Tally,
    connect_live,
    embedded_supervisor,
    query_service_answers,
    read_record,
    run_bounded,
    sha256_of,
)

VERIFIED = "verified"
FAILED = "failed"
BYTES = "bytes"
#: Seconds the database may take to answer before verification goes on without it.
INDEX_OPEN_SECONDS = 15.0


@dataclass(frozen=True, slots=True)
class VerifyReport:
    verified: int
    failed: int
    bytes_read: int
    index: str
    """How the index was checked: "query service", "database" or "not checked (why)"."""
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return self.failed == 0


async def verify_archive(
    settings: Settings,
    *,
    open_index: OpenIndex | None = None,
    check_index: bool = True,
    concurrency: int = 8,
    progress: Progress | None = None,
) -> VerifyReport:
    """Verify the archive ``settings`` describe; compare with its index when reachable: through
    the running query service, else in the database itself (``open_index``, which is
    ``tessera_query.service.open_index``)."""
    blobs = open_blob_store(settings)
    index: MaintainedIndex | None = None
    how = "not checked (--no-index)"
    if check_index:
        index, how = await _reachable_index(settings, open_index)
    try:
        report = await verify(blobs, index=index, concurrency=concurrency, progress=progress)
    finally:
        if index is not None:
            await index.close()
    return VerifyReport(report.verified, report.failed, report.bytes_read, how, report.problems)


async def _reachable_index(
    settings: Settings, open_index: OpenIndex | None
) -> tuple[MaintainedIndex | None, str]:
    if embedded_supervisor(settings.data_dir) is not None or await query_service_answers(
        settings.nats_url
    ):
        try:
            return BusIndex(await connect_live(settings)), "query service"
        except MaintenanceRefusedError:
            # Tessera runs, so its database is not ours to open, but its query service is down.
            return None, "not checked (Tessera runs but its query service does not answer)"
    if open_index is None:
        return None, "not checked (no running query service)"
    if settings.index_backend == "sqlite" and not settings.resolved_sqlite_path.exists():
        return None, f"not checked (no index at {settings.resolved_sqlite_path})"
    try:
        return await asyncio.wait_for(open_index(settings), INDEX_OPEN_SECONDS), "database"
    except Exception as error:
        return None, f"not checked (the index did not open: {type(error).__name__})"


async def verify(
    blobs: BlobStore,
    *,
    index: InstanceLocator | None = None,
    concurrency: int = 8,
    progress: Progress | None = None,
) -> VerifyReport:
    """Check every instance in ``blobs`` (and against ``index``, when given)."""
    tally = Tally(progress)

    async def one(found: StoredInstance) -> None:
        problems = await _check(blobs, index, found, tally)
        for problem in problems:
            tally.keep(problem)
        tally.count(FAILED if problems else VERIFIED)

    await run_bounded(stored_instances(blobs), one, concurrency=concurrency)
    return VerifyReport(
        verified=tally.counts[VERIFIED],
        failed=tally.counts[FAILED],
        bytes_read=tally.counts[BYTES],
        index="checked" if index is not None else "not checked",
        problems=tuple(tally.problems),
    )


async def _check(
    blobs: BlobStore, index: InstanceLocator | None, found: StoredInstance, tally: Tally
) -> list[Problem]:
    if found.object is None:
        return [Problem(found.sidecar_key, "object-missing", "the sidecar's object is missing")]
    if found.sidecar is None:
        return [Problem(found.object_key, "sidecar-missing", "the object has no sidecar")]
    record = await _record(blobs, found)
    if record is None:
        return [Problem(found.sidecar_key, "sidecar-unreadable", "not an instance record")]
    problems = await _check_bytes(blobs, found, record, tally)
    if problems and problems[0].kind != "object-missing":
        again = await _record(blobs, found)
        if again is not None and again != record:  # re-stored meanwhile: check the new one
            record = again
            problems = await _check_bytes(blobs, found, record, tally)
    if index is not None and not problems:
        problems = await _check_index(index, record)
    return problems


async def _record(blobs: BlobStore, found: StoredInstance) -> InstanceRecord | None:
    try:
        record = await read_record(blobs, found.sidecar_key)
    except ValidationError:
        return None
    if record is None or (record.object_key, record.sidecar_key) != (
        found.object_key,
        found.sidecar_key,
    ):
        return None
    return record


async def _check_bytes(
    blobs: BlobStore, found: StoredInstance, record: InstanceRecord, tally: Tally
) -> list[Problem]:
    try:
        sha256, size = await sha256_of(blobs, found.object_key)
    except BlobNotFoundError:
        return [Problem(found.object_key, "object-missing", "the object is gone")]
    tally.counts[BYTES] += size
    problems = []
    if size != record.size:
        problems.append(
            Problem(
                found.object_key, "size-mismatch", f"{size} bytes stored, {record.size} recorded"
            )
        )
    if sha256 != record.sha256:
        problems.append(
            Problem(
                found.object_key,
                "sha256-mismatch",
                f"SHA-256 {sha256[:16]}… stored, {record.sha256[:16]}… recorded",
            )
        )
    return problems


async def _check_index(index: InstanceLocator, record: InstanceRecord) -> list[Problem]:
    reply = await index.locate(
        LocateRequest(
            study_uid=record.study_uid,
            series_uid=record.series_uid,
            sop_uid=record.sop_uid,
            limit=1,
        )
    )
    if not reply.instances:
        return [Problem(record.object_key, "not-indexed", "the index does not list it")]
    located = reply.instances[0]
    indexed = (located.object_key, located.size, located.sha256)
    if indexed != (record.object_key, record.size, record.sha256):
        return [
            Problem(
                record.object_key,
                "index-mismatch",
                "the index records another object, size or SHA-256",
            )
        ]
    return []
