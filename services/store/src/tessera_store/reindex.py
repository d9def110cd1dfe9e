"""``tessera reindex``: rebuild the index from object storage (ARCHITECTURE invariant 4).

Object storage is the system of record; every stored instance has a sidecar holding the
``InstanceRecord`` the store indexed (``layout``). Reindexing streams the listing of
``studies/`` and upserts each complete instance — idempotently, keyed by SOP Instance UID — so
it can be repeated, interrupted and resumed at will.

**Stopped or live.** By default it writes the database directly, which is safe only while no
query service owns it: ``reindex_archive`` refuses when ``tessera serve`` runs on the data
directory or a query service answers on ``TESSERA_NATS_URL``. With ``live=True`` it sends the
query service the same ``query.index`` requests the store sends, so a running system is
re-indexed by its own index writer, on either backend.

**Trusting sidecars or not.** With ``reanalyze=True`` every ``.dcm`` object is parsed again
(as at ingest), hashed, and its sidecar rewritten before indexing: for sidecars that are
missing or corrupt. Only the store writes sidecars while Tessera runs, so re-analysis runs on a
stopped system only. Without it, an object without a sidecar is skipped: it is what an
interrupted STOW leaves behind (never acknowledged, so never to become visible) and what
``tessera gc`` collects.

**Two copies of one SOP Instance** (filed under two studies or series, when a store died
between re-filing an instance and deleting its old objects): the copy stored last is indexed,
whatever the listing order; the other is reported as superseded.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError

from tessera_common.blobstore import BlobNotFoundError, BlobStore, open_blob_store
from tessera_common.errors import ErrorCode, TesseraError
from tessera_common.messages import IndexReply, InstanceRecord
from tessera_common.settings import Settings

from .analysis import InstanceAnalysis, InstanceRejectedError, analyze_instance, quiet_pydicom
from .catalog import StoredInstance, stored_instances
from .ingest import build_record
from .maintenance import (
    BusIndex,
    IndexWriter,
    MaintainedIndex,
    MaintenanceRefusedError,
    OpenIndex,
    Problem,
    Progress,
    Tally,
    connect_live,
    read_record,
    run_bounded,
    running_system,
    sha256_of,
)

INDEXED = "indexed"
SKIPPED = "skipped"
ERROR = "error"
SUPERSEDED = "superseded"
#: Bus failures that mean the query service is gone, not that one record is bad.
_FATAL = frozenset({ErrorCode.SERVICE_UNAVAILABLE, ErrorCode.TIMEOUT})


@dataclass(frozen=True, slots=True)
class ReindexReport:
    indexed: int
    skipped: int
    errors: int
    superseded: int
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return self.errors == 0


async def reindex_archive(
    settings: Settings,
    *,
    open_index: OpenIndex,
    live: bool = False,
    reanalyze: bool = False,
    concurrency: int = 16,
    progress: Progress | None = None,
) -> ReindexReport:
    """Rebuild the index of the archive ``settings`` describe.

    ``open_index`` is ``tessera_query.service.open_index``. Raises
    ``MaintenanceRefusedError`` when the combination is unsafe: a direct rebuild while Tessera
    runs, re-analysis while it runs, or ``live`` while it does not."""
    blobs = open_blob_store(settings)
    index: MaintainedIndex
    if live:
        if reanalyze:
            raise MaintenanceRefusedError(
                "--reanalyze rewrites sidecars, which only the store service may write while "
                "Tessera runs: stop Tessera, then run 'tessera reindex --reanalyze' "
                "without --live"
            )
        index = BusIndex(await connect_live(settings))
    else:
        running = await running_system(settings)
        if running is not None:
            raise MaintenanceRefusedError(
                f"{running}, and its query service owns the index: stop Tessera and run "
                "'tessera reindex' again, or run 'tessera reindex --live' to re-index "
                "through the running query service"
            )
        index = await open_index(settings)
    try:
        return await reindex(
            blobs, index, reanalyze=reanalyze, concurrency=concurrency, progress=progress
        )
    finally:
        await index.close()


async def reindex(
    blobs: BlobStore,
    index: IndexWriter,
    *,
    reanalyze: bool = False,
    concurrency: int = 16,
    progress: Progress | None = None,
) -> ReindexReport:
    """Upsert every complete instance in ``blobs`` into ``index``.

    Problems with single objects are counted and reported; a failing index (an exception from
    ``index``, or a query service that stops answering) ends the run."""
    if reanalyze:
        quiet_pydicom()
    tally = Tally(progress)

    async def one(found: StoredInstance) -> None:
        record = await _record(blobs, found, reanalyze, tally)
        if record is None:
            return
        try:
            reply = await index.upsert(record, record.metadata or {})
        except TesseraError as error:
            if error.code in _FATAL:
                raise
            tally.problem(ERROR, found.sidecar_key, "index-refused", error.reason)
            return
        tally.count(INDEXED)
        await _settle(blobs, index, record, reply, tally)

    await run_bounded(stored_instances(blobs), one, concurrency=concurrency)
    counts = tally.counts
    return ReindexReport(
        indexed=counts[INDEXED],
        skipped=counts[SKIPPED],
        errors=counts[ERROR],
        superseded=counts[SUPERSEDED],
        problems=tuple(tally.problems),
    )


async def _record(
    blobs: BlobStore, found: StoredInstance, reanalyze: bool, tally: Tally
) -> InstanceRecord | None:
    """The record to index for ``found``, or None (with the problem tallied)."""
    if found.object is None:
        tally.problem(ERROR, found.sidecar_key, "object-missing", "the sidecar's object is missing")
        return None
    if reanalyze:
        return await _reanalyzed(blobs, found, tally)
    if found.sidecar is None:
        tally.problem(
            SKIPPED,
            found.object_key,
            "sidecar-missing",
            "no sidecar: left by an interrupted STOW ('tessera gc' collects it), or a lost "
            "sidecar ('tessera reindex --reanalyze' rebuilds it)",
        )
        return None
    try:
        record = await read_record(blobs, found.sidecar_key)
    except ValidationError:
        record = None
    if record is None:
        tally.problem(
            ERROR,
            found.sidecar_key,
            "sidecar-unreadable",
            "not an instance record; 'tessera reindex --reanalyze' rebuilds it",
        )
        return None
    if (record.object_key, record.sidecar_key) != (found.object_key, found.sidecar_key):
        tally.problem(
            ERROR, found.sidecar_key, "sidecar-misplaced", "the record names other objects"
        )
        return None
    if record.size != found.object.size:
        tally.problem(
            ERROR,
            found.object_key,
            "size-mismatch",
            f"{found.object.size} bytes stored, {record.size} recorded; see 'tessera verify'",
        )
        return None
    return record


async def _reanalyzed(
    blobs: BlobStore, found: StoredInstance, tally: Tally
) -> InstanceRecord | None:
    """Parse and hash the stored object as at ingest and write its sidecar again.

    A readable sidecar whose digest differs from the object's is kept: the bytes changed
    after they were stored, and the recorded digest is the evidence (``tessera verify``)."""
    assert found.object is not None
    try:
        old = await read_record(blobs, found.sidecar_key)
    except ValidationError:
        old = None
    try:
        sha256, size = await sha256_of(blobs, found.object_key)
        if old is not None and (old.sha256, old.size) != (sha256, size):
            tally.problem(
                ERROR,
                found.object_key,
                "sha256-mismatch",
                "the bytes differ from those recorded at ingest; not indexed, sidecar kept",
            )
            return None
        analysis = await asyncio.to_thread(_analyze, blobs, found.object_key, size)
    except BlobNotFoundError:
        tally.problem(ERROR, found.object_key, "object-missing", "deleted during the run")
        return None
    except InstanceRejectedError as rejected:
        tally.problem(ERROR, found.object_key, "not-storable", rejected.reason)
        return None
    filed = (found.study_uid, found.series_uid, found.sop_uid)
    if (analysis.study_uid, analysis.series_uid, analysis.sop_uid) != filed:
        tally.problem(ERROR, found.object_key, "object-misplaced", "its UIDs name another location")
        return None
    if old is not None:
        stored_at = old.stored_at
    else:
        stored_at = (found.object.last_modified or datetime.now(UTC)).isoformat()
    record = build_record(analysis, size=size, sha256=sha256, stored_at=stored_at)
    if record != old:
        await blobs.put(record.sidecar_key, record.model_dump_json().encode())
    return record


def _analyze(blobs: BlobStore, key: str, size: int) -> InstanceAnalysis:
    with blobs.open_reader(key, size=size) as fp:
        return analyze_instance(fp, size=size, expected_study_uid=None)


async def _settle(
    blobs: BlobStore, index: IndexWriter, record: InstanceRecord, reply: IndexReply, tally: Tally
) -> None:
    """When indexing ``record`` displaced a copy of the same SOP Instance stored elsewhere,
    keep whichever copy was stored last indexed, and report the other."""
    current, loser = record, None
    while reply.previous_sidecar_key and reply.previous_object_key not in {
        current.object_key,
        loser,
    }:
        try:
            other = await read_record(blobs, reply.previous_sidecar_key)
        except ValidationError:
            other = None
        if other is None or await blobs.head(other.object_key) is None:
            return  # the index pointed at objects that are gone
        if _stored_later(current, other):
            _superseded(tally, loser=other, winner=current)
            return
        _superseded(tally, loser=current, winner=other)
        loser = current.object_key
        reply = await index.upsert(other, other.metadata or {})
        current = other


def _stored_later(a: InstanceRecord, b: InstanceRecord) -> bool:
    return (_instant(a.stored_at), a.sidecar_key) > (_instant(b.stored_at), b.sidecar_key)


def _instant(stored_at: str) -> datetime:
    try:
        instant = datetime.fromisoformat(stored_at)
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return instant if instant.tzinfo is not None else instant.replace(tzinfo=UTC)


def _superseded(tally: Tally, *, loser: InstanceRecord, winner: InstanceRecord) -> None:
    tally.problem(
        SUPERSEDED,
        loser.object_key,
        "superseded",
        f"SOP Instance {loser.sop_uid} was stored again later, at {winner.object_key}; this "
        "copy is not indexed",
    )
