"""Collection of what interrupted STOWs leave in object storage (ARCHITECTURE invariant 2):
abandoned uploads in incoming/ and half instances, on real backends."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.support.archive import running_archive, synthetic_instance

from tessera_common.blobstore import BlobStore, ObjectStoreBlobs, open_blob_store
from tessera_common.layout import INCOMING_PREFIX, incoming_key
from tessera_common.settings import Settings
from tessera_store.orphans import collect_orphans, collecting_orphans

GRACE = timedelta(hours=1)
LATER = timedelta(hours=2)


async def keys(blobs: BlobStore, prefix: str) -> set[str]:
    return {info.key async for info in blobs.list(prefix)}


async def test_uploads_older_than_the_grace_period_are_deleted(blobs: ObjectStoreBlobs) -> None:
    uploads = {incoming_key(), incoming_key()}
    for key in uploads:
        await blobs.put(key, b"part of a STOW that died")

    young = await collect_orphans(blobs, grace=GRACE)
    assert (young.uploads_deleted, young.uploads_kept) == (0, 2)
    assert await keys(blobs, INCOMING_PREFIX) == uploads

    old = await collect_orphans(blobs, grace=GRACE, now=datetime.now(UTC) + LATER)
    assert (old.uploads_deleted, old.uploads_kept) == (2, 0)
    assert await keys(blobs, INCOMING_PREFIX) == set()


async def test_old_and_young_uploads_side_by_side(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, blob_backend="local", blob_root=tmp_path / "objects")
    blobs = open_blob_store(settings)
    old, young = incoming_key(), incoming_key()
    for key in (old, young):
        await blobs.put(key, b"bytes")
    two_hours_ago = time.time() - LATER.total_seconds()
    os.utime(settings.resolved_blob_root / old, (two_hours_ago, two_hours_ago))

    report = await collect_orphans(blobs, grace=GRACE)

    assert (report.uploads_deleted, report.uploads_kept) == (1, 1)
    assert await keys(blobs, INCOMING_PREFIX) == {young}


async def test_half_instances_are_reported_then_removed_on_request(
    blobs: ObjectStoreBlobs, tmp_path: Path
) -> None:
    async with running_archive(tmp_path, blobs) as archive:
        for number in (1, 2, 3):
            assert (await archive.stow(synthetic_instance(1, 1, number))).stored
    stored = sorted(await keys(blobs, "studies/"))
    objects = [k for k in stored if k.endswith(".dcm")]
    sidecars = [k for k in stored if k.endswith(".json")]
    await blobs.delete(sidecars[0])  # a store killed between rename and sidecar
    await blobs.delete(objects[1])  # an object lost
    alone = {objects[0], sidecars[1]}
    later = datetime.now(UTC) + LATER

    young = await collect_orphans(blobs, grace=GRACE)
    assert (young.unpaired, young.unpaired_young, young.removed) == (0, 2, 0)

    ignored = await collect_orphans(blobs, grace=GRACE, now=later, instances="ignore")
    assert (ignored.unpaired, ignored.unpaired_young) == (0, 0)

    reported = await collect_orphans(blobs, grace=GRACE, now=later)
    assert (reported.unpaired, reported.removed) == (2, 0)
    assert {(p.key, p.kind) for p in reported.problems} == {
        (objects[0], "sidecar-missing"),
        (sidecars[1], "object-missing"),
    }
    assert alone <= await keys(blobs, "studies/")

    removed = await collect_orphans(blobs, grace=GRACE, now=later, instances="remove")
    assert (removed.unpaired, removed.removed) == (2, 2)
    assert await keys(blobs, "studies/") == {objects[2], sidecars[2]}, "whole ones stay"


async def test_the_store_timer_collects(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        blob_backend="local",
        blob_root=tmp_path / "objects",
        orphan_interval_seconds=0.1,
        orphan_grace_seconds=0.2,
    )
    blobs = open_blob_store(settings)
    upload = incoming_key()
    await blobs.put(upload, b"abandoned")
    async with collecting_orphans(settings, blobs):
        for _ in range(100):
            if await blobs.head(upload) is None:
                break
            await asyncio.sleep(0.05)
    assert await blobs.head(upload) is None
