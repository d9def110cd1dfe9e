"""``tessera reindex`` on real backends: the index is derived (ARCHITECTURE invariant 4).

Instances are stored through the real ingest path, the SQLite index is thrown away, and the
rebuilt index must answer QIDO-RS searches exactly as before.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from tests.support.archive import (
    LAYOUT,
    Archive,
    running_archive,
    search_all,
    sop_uid,
    study_uid,
    synthetic_instance,
)

from tessera_common.blobstore import ObjectStoreBlobs, open_blob_store
from tessera_common.messages import (
    InstanceRecord,
    LocateRequest,
    MetadataRequest,
    QueryLevel,
)
from tessera_common.settings import Settings
from tessera_query.index import Index
from tessera_query.service import open_index
from tessera_store.maintenance import MaintenanceRefusedError
from tessera_store.reindex import reindex, reindex_archive

QUERIES: list[tuple[str, QueryLevel, list[tuple[str, str]]]] = [
    ("all-studies", QueryLevel.STUDY, []),
    ("all-series", QueryLevel.SERIES, []),
    ("all-instances", QueryLevel.INSTANCE, []),
    ("by-patient-id", QueryLevel.STUDY, [("PatientID", "DUR2")]),
    ("by-patient-name", QueryLevel.STUDY, [("PatientName", "durable*")]),
    ("by-modality", QueryLevel.SERIES, [("Modality", "CT"), ("SeriesNumber", "2")]),
    ("by-date-range", QueryLevel.STUDY, [("StudyDate", "20240102-")]),
]


async def snapshot(index: Index) -> dict[str, Any]:
    answers: dict[str, Any] = {
        name: await search_all(index, level, params) for name, level, params in QUERIES
    }
    for study in (1, 2):
        reply = await index.locate(LocateRequest(study_uid=study_uid(study)))
        answers[f"locate-{study}"] = [i.model_dump() for i in reply.instances]
        metadata = await index.metadata_page(MetadataRequest(study_uid=study_uid(study)))
        answers[f"metadata-{study}"] = metadata.documents
    return answers


async def store_layout(archive: Archive) -> int:
    for study, series, number in LAYOUT:
        outcome = await archive.stow(synthetic_instance(study, series, number))
        assert outcome.stored, outcome.reason
    return len(LAYOUT)


def drop_index(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


async def test_a_lost_index_is_rebuilt_identically(blobs: ObjectStoreBlobs, tmp_path: Path) -> None:
    async with running_archive(tmp_path, blobs) as archive:
        stored = await store_layout(archive)
        before = await snapshot(archive.index)
        settings = archive.settings
    assert len(before["all-instances"]) == stored
    drop_index(settings.resolved_sqlite_path)

    rebuilt = await open_index(settings)
    try:
        assert await search_all(rebuilt, QueryLevel.STUDY, []) == []
        report = await reindex(blobs, rebuilt)
        assert (report.indexed, report.skipped, report.errors) == (stored, 0, 0)
        assert await snapshot(rebuilt) == before

        again = await reindex(blobs, rebuilt)
        assert (again.indexed, again.errors) == (stored, 0), "reindexing is idempotent"
        assert await snapshot(rebuilt) == before
    finally:
        await rebuilt.close()


async def test_reanalysis_recovers_lost_and_corrupt_sidecars(
    blobs: ObjectStoreBlobs, tmp_path: Path
) -> None:
    async with running_archive(tmp_path, blobs) as archive:
        stored = await store_layout(archive)
        before = await snapshot(archive.index)
        settings = archive.settings
    missing, corrupt = sop_uid(1, 1, 1), sop_uid(2, 2, 3)
    keys = {info.key async for info in blobs.list("studies/")}
    missing_key = next(k for k in keys if k.endswith(f"/{missing}.json"))
    corrupt_key = next(k for k in keys if k.endswith(f"/{corrupt}.json"))
    intact = await blobs.get(corrupt_key)
    await blobs.delete(missing_key)
    await blobs.put(corrupt_key, b'{"not": "a record"}')
    drop_index(settings.resolved_sqlite_path)

    rebuilt = await open_index(settings)
    try:
        trusting = await reindex(blobs, rebuilt)
        assert (trusting.indexed, trusting.skipped, trusting.errors) == (stored - 2, 1, 1)
        assert {(p.key, p.kind) for p in trusting.problems} == {
            (missing_key.removesuffix(".json") + ".dcm", "sidecar-missing"),
            (corrupt_key, "sidecar-unreadable"),
        }

        report = await reindex(blobs, rebuilt, reanalyze=True, concurrency=4)
        assert (report.indexed, report.skipped, report.errors) == (stored, 0, 0)
        assert await blobs.get(corrupt_key) != b'{"not": "a record"}'
        assert (await blobs.head(missing_key)) is not None, "the lost sidecar is written again"
        assert await snapshot(rebuilt) == before
    finally:
        await rebuilt.close()
    rewritten = InstanceRecord.model_validate_json(await blobs.get(corrupt_key))
    original = InstanceRecord.model_validate_json(intact)
    assert rewritten.model_copy(update={"stored_at": original.stored_at}) == original


async def test_reanalysis_keeps_the_evidence_of_changed_bytes(
    blobs: ObjectStoreBlobs, tmp_path: Path
) -> None:
    """Re-analysis never launders corruption: a sidecar whose digest no longer matches its
    object is kept (it is what ``tessera verify`` reports) and the instance is not indexed."""
    async with running_archive(tmp_path, blobs) as archive:
        assert (await archive.stow(synthetic_instance(1, 1, 1))).stored
        settings = archive.settings
    [object_key] = [i.key async for i in blobs.list("studies/") if i.key.endswith(".dcm")]
    sidecar_key = object_key.removesuffix(".dcm") + ".json"
    recorded = await blobs.get(sidecar_key)
    data = bytearray(await blobs.get(object_key))
    data[-1] ^= 0xFF
    await blobs.put(object_key, bytes(data))
    drop_index(settings.resolved_sqlite_path)

    rebuilt = await open_index(settings)
    try:
        report = await reindex(blobs, rebuilt, reanalyze=True)
    finally:
        await rebuilt.close()
    assert (report.indexed, report.errors) == (0, 1)
    assert [(p.key, p.kind) for p in report.problems] == [(object_key, "sha256-mismatch")]
    assert await blobs.get(sidecar_key) == recorded


@pytest.mark.parametrize("newer_in", [1, 2], ids=["newer-listed-first", "newer-listed-last"])
async def test_the_copy_stored_last_wins(
    newer_in: int, blobs: ObjectStoreBlobs, tmp_path: Path
) -> None:
    """A store killed between re-filing an instance under another study and deleting its old
    objects leaves two copies; the one stored last is indexed, in any listing order."""
    older_in = 3 - newer_in
    async with running_archive(tmp_path, blobs) as archive:
        assert (await archive.stow(synthetic_instance(1, 1, 1, study_of=older_in))).stored
        leftovers = {info.key: await blobs.get(info.key) async for info in blobs.list("studies/")}
        assert (await archive.stow(synthetic_instance(1, 1, 1, study_of=newer_in))).stored
        settings = archive.settings
    for key, data in leftovers.items():  # as if the old objects had not been deleted
        await blobs.put(key, data)
    drop_index(settings.resolved_sqlite_path)

    rebuilt = await open_index(settings)
    try:
        report = await reindex(blobs, rebuilt, concurrency=1)
        assert (report.indexed, report.superseded, report.errors) == (2, 1, 0)
        assert [p.kind for p in report.problems] == ["superseded"]
        assert f"studies/{study_uid(older_in)}/" in report.problems[0].key
        located = await rebuilt.locate(LocateRequest(study_uid=study_uid(newer_in)))
        assert [i.sop_uid for i in located.instances] == [sop_uid(1, 1, 1)]
        gone = await rebuilt.locate(LocateRequest(study_uid=study_uid(older_in)))
        assert gone.instances == []
    finally:
        await rebuilt.close()


# --- stopped or live -----------------------------------------------------------------------


def local_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, blob_backend="local", blob_root=tmp_path / "objects")


async def test_a_direct_rebuild_is_refused_while_tessera_serve_runs(tmp_path: Path) -> None:
    settings = local_settings(tmp_path).model_copy(update={"nats_url": "nats://127.0.0.1:9"})
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "supervisor.pid").write_text(f"{os.getppid()}\n")
    with pytest.raises(MaintenanceRefusedError, match=r"tessera serve.*--live"):
        await reindex_archive(settings, open_index=open_index)


async def test_a_direct_rebuild_is_refused_while_a_query_service_answers(
    tmp_path: Path,
) -> None:
    settings = local_settings(tmp_path)
    async with running_archive(tmp_path, open_blob_store(settings), settings=settings) as archive:
        with pytest.raises(MaintenanceRefusedError, match="query service answers"):
            await reindex_archive(archive.settings, open_index=open_index)


async def test_a_live_reindex_goes_through_the_query_service(tmp_path: Path) -> None:
    settings = local_settings(tmp_path)
    async with running_archive(tmp_path, open_blob_store(settings), settings=settings) as archive:
        stored = await store_layout(archive)
        before = await snapshot(archive.index)
        with sqlite3.connect(settings.resolved_sqlite_path) as db:  # lose every row
            for table in ("instances", "series", "studies"):
                db.execute(f"DELETE FROM {table}")
        assert await search_all(archive.index, QueryLevel.STUDY, []) == []

        seen: list[str] = []
        report = await reindex_archive(
            archive.settings, open_index=open_index, live=True, progress=seen.append
        )
        assert (report.indexed, report.errors) == (stored, 0)
        assert seen == ["indexed"] * stored
        assert await snapshot(archive.index) == before

        with pytest.raises(MaintenanceRefusedError, match="--reanalyze"):
            await reindex_archive(
                archive.settings, open_index=open_index, live=True, reanalyze=True
            )


async def test_a_live_reindex_needs_a_running_system(tmp_path: Path) -> None:
    settings = local_settings(tmp_path).model_copy(update={"nats_url": "nats://127.0.0.1:9"})
    with pytest.raises(MaintenanceRefusedError, match="no query service answers"):
        await reindex_archive(settings, open_index=open_index, live=True)


async def test_a_stopped_archive_is_rebuilt_by_reindex_archive(tmp_path: Path) -> None:
    settings = local_settings(tmp_path)
    async with running_archive(tmp_path, open_blob_store(settings), settings=settings) as archive:
        stored = await store_layout(archive)
        before = await snapshot(archive.index)
    drop_index(settings.resolved_sqlite_path)
    stopped = settings.model_copy(update={"nats_url": "nats://127.0.0.1:9"})

    report = await reindex_archive(stopped, open_index=open_index)

    assert (report.indexed, report.errors) == (stored, 0)
    index = await open_index(settings)
    try:
        assert await snapshot(index) == before
    finally:
        await index.close()
