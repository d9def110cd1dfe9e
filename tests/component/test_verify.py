"""``tessera verify`` on real backends: every stored object's SHA-256 and size against its
sidecar and the index (ARCHITECTURE invariant 1)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.support.archive import (
    Archive,
    running_archive,
    series_uid,
    sop_uid,
    study_uid,
    synthetic_instance,
)

from tessera_common.blobstore import BlobStore, ObjectStoreBlobs, open_blob_store
from tessera_common.layout import instance_object_key, sidecar_key
from tessera_common.settings import Settings
from tessera_query.service import open_index
from tessera_store.verify import verify, verify_archive

INSTANCES = [(1, 1, 1), (1, 1, 2), (1, 2, 1)]
VICTIM = (1, 1, 2)
VICTIM_UIDS = (study_uid(VICTIM[0]), series_uid(*VICTIM[:2]), sop_uid(*VICTIM))
OBJECT = instance_object_key(*VICTIM_UIDS)
SIDECAR = sidecar_key(*VICTIM_UIDS)


async def flip_one_byte(blobs: BlobStore) -> None:
    data = bytearray(await blobs.get(OBJECT))
    data[-3] ^= 0x01  # a pixel: the file still parses, only the digest tells
    await blobs.put(OBJECT, bytes(data))


async def append_bytes(blobs: BlobStore) -> None:
    await blobs.put(OBJECT, await blobs.get(OBJECT) + b"\0\0")


async def delete_object(blobs: BlobStore) -> None:
    await blobs.delete(OBJECT)


async def delete_sidecar(blobs: BlobStore) -> None:
    await blobs.delete(SIDECAR)


async def garble_sidecar(blobs: BlobStore) -> None:
    await blobs.put(SIDECAR, b"{")


@dataclass(frozen=True)
class Damage:
    id: str
    do: Callable[[BlobStore], Awaitable[None]]
    kinds: set[str]
    key: str


DAMAGES = [
    Damage("one-byte-flipped", flip_one_byte, {"sha256-mismatch"}, OBJECT),
    Damage("bytes-appended", append_bytes, {"size-mismatch", "sha256-mismatch"}, OBJECT),
    Damage("object-lost", delete_object, {"object-missing"}, SIDECAR),
    Damage("sidecar-lost", delete_sidecar, {"sidecar-missing"}, OBJECT),
    Damage("sidecar-garbled", garble_sidecar, {"sidecar-unreadable"}, SIDECAR),
]


async def store(archive: Archive) -> int:
    total = 0
    for uids in INSTANCES:
        data = synthetic_instance(*uids)
        assert (await archive.stow(data)).stored
        total += len(data)
    return total


async def test_an_intact_archive_verifies(blobs: ObjectStoreBlobs, tmp_path: Path) -> None:
    async with running_archive(tmp_path, blobs) as archive:
        total = await store(archive)
        seen: list[str] = []
        report = await verify(blobs, index=archive.index, progress=seen.append)
    assert report.ok
    assert (report.verified, report.failed, report.bytes_read) == (len(INSTANCES), 0, total)
    assert report.problems == ()
    assert seen == ["verified"] * len(INSTANCES)


@pytest.mark.parametrize("damage", DAMAGES, ids=[d.id for d in DAMAGES])
async def test_damage_is_reported(damage: Damage, blobs: ObjectStoreBlobs, tmp_path: Path) -> None:
    async with running_archive(tmp_path, blobs) as archive:
        await store(archive)
        await damage.do(blobs)
        report = await verify(blobs, index=archive.index, concurrency=2)
    assert not report.ok
    assert (report.verified, report.failed) == (len(INSTANCES) - 1, 1)
    assert {p.kind for p in report.problems} == damage.kinds
    assert {p.key for p in report.problems} == {damage.key}


async def test_the_index_is_compared(blobs: ObjectStoreBlobs, tmp_path: Path) -> None:
    async with running_archive(tmp_path, blobs) as archive:
        await store(archive)
    empty = await open_index(Settings(data_dir=tmp_path / "elsewhere"))
    try:
        report = await verify(blobs, index=empty)
    finally:
        await empty.close()
    assert report.failed == len(INSTANCES)
    assert {p.kind for p in report.problems} == {"not-indexed"}


async def test_verify_archive_finds_the_index_running_or_stopped(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, blob_backend="local", blob_root=tmp_path / "objects")
    async with running_archive(tmp_path, open_blob_store(settings), settings=settings) as archive:
        await store(archive)
        live = await verify_archive(archive.settings, open_index=open_index)
    assert (live.ok, live.verified, live.index) == (True, len(INSTANCES), "query service")

    stopped = settings.model_copy(update={"nats_url": "nats://127.0.0.1:9"})
    await flip_one_byte(open_blob_store(stopped))
    offline = await verify_archive(stopped, open_index=open_index)
    assert (offline.ok, offline.failed, offline.index) == (False, 1, "database")
    assert [p.kind for p in offline.problems] == ["sha256-mismatch"]

    unchecked = await verify_archive(stopped, check_index=False)
    assert unchecked.index.startswith("not checked")
