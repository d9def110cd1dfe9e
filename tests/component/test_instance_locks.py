"""Instance locks across store replicas (``ClusterLocks``, TESSERA_INSTANCE_LOCKS=cluster), on a
real nats-server: leases in a JetStream key-value bucket, taken all or none, renewed while
held, ended by their age when the holder vanished; and two store processes racing two
versions of one SOP Instance, which interleave without them."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import pytest
from tests.support.archive import (
    Archive,
    running_archive,
    sop_uid,
    study_uid,
    synthetic_instance,
)

from tessera.natsd import NatsServer
from tessera_common.blobstore import LocalBlobs
from tessera_common.bus import Bus
from tessera_common.errors import ErrorCode, TesseraError
from tessera_common.messages import InstanceOutcome, InstanceRecord, LocateRequest
from tessera_store.ingest import Ingestor
from tessera_store.locks import ClusterLocks, InstanceLocks, ProcessLocks

X, Y = "1.2.3.1", "1.2.3.2"


@pytest.fixture
async def nats_url(tmp_path: Path) -> AsyncIterator[str]:
    server = NatsServer(tmp_path / "nats")
    await server.start()
    try:
        yield server.url
    finally:
        await server.stop()


@pytest.fixture
async def replicas(nats_url: str) -> AsyncIterator[list[Bus]]:
    """Three connections, as three store replicas would have."""
    buses = [await Bus.connect(nats_url, name=f"replica-{n}") for n in range(3)]
    try:
        yield buses
    finally:
        for bus in buses:
            await bus.close()


async def locks_of(bus: Bus, *, lease: float = 30.0, wait: float = 10.0) -> ClusterLocks:
    return await ClusterLocks.open(bus, lease_seconds=lease, wait_seconds=wait)


async def test_a_held_instance_waits_for_its_holder(replicas: list[Bus]) -> None:
    a, b = [await locks_of(bus) for bus in replicas[:2]]
    order: list[str] = []
    async with a.hold([X]):
        waiting = asyncio.create_task(_hold_briefly(b, [X], order, "b"))
        await asyncio.sleep(0.3)
        assert not waiting.done(), "another replica took a held instance"
        order.append("a released")
    await asyncio.wait_for(waiting, 5)
    assert order == ["a released", "b"]


async def _hold_briefly(locks: InstanceLocks, uids: list[str], order: list[str], name: str) -> None:
    async with locks.hold(uids):
        order.append(name)


async def test_sets_are_taken_all_or_none(replicas: list[Bus]) -> None:
    """B wants X and Y while A holds X: B keeps neither, so C can take Y meanwhile."""
    a, b, c = [await locks_of(bus) for bus in replicas]
    order: list[str] = []
    async with a.hold([X]):
        wanting_both = asyncio.create_task(_hold_briefly(b, [X, Y], order, "b"))
        await asyncio.sleep(0.2)
        await asyncio.wait_for(_hold_briefly(c, [Y], order, "c"), 5)
        assert not wanting_both.done()
        order.append("a released")
    await asyncio.wait_for(wanting_both, 5)
    assert order == ["c", "a released", "b"]


async def test_waiting_gives_up_with_a_retryable_error(replicas: list[Bus]) -> None:
    a = await locks_of(replicas[0])
    b = await locks_of(replicas[1], wait=0.3)
    async with a.hold([X]):
        started = time.monotonic()
        with pytest.raises(TesseraError) as raised:
            async with b.hold([X]):
                pass
        assert 0.2 < time.monotonic() - started < 3
    assert raised.value.code is ErrorCode.SERVICE_UNAVAILABLE
    assert "another request" in str(raised.value)
    async with b.hold([X]):
        pass


async def test_a_lease_is_renewed_while_held(replicas: list[Bus]) -> None:
    a = await locks_of(replicas[0], lease=1.0)
    b = await locks_of(replicas[1], lease=1.0, wait=0.2)
    async with a.hold([X]):
        for _ in range(4):  # 2.4 s: more than twice the lease's age
            with pytest.raises(TesseraError):
                async with b.hold([X]):
                    pass
            await asyncio.sleep(0.4)


async def test_the_lease_of_a_vanished_holder_ends_by_its_age(nats_url: str) -> None:
    crashed = await Bus.connect(nats_url, name="crashed")
    held = await (await locks_of(crashed, lease=1.0))._acquire([X])
    assert list(held) == [X]
    await crashed.close()  # neither renewed nor released, as after kill -9
    survivor = await Bus.connect(nats_url, name="survivor")
    try:
        locks = await locks_of(survivor, lease=1.0, wait=10)
        started = time.monotonic()
        async with locks.hold([X]):
            waited = time.monotonic() - started
        assert 0.3 < waited < 6, waited
    finally:
        await survivor.close()


async def test_process_locks_take_sorted_sets() -> None:
    locks = ProcessLocks()
    order: list[str] = []
    async with locks.hold([Y, X, X]):
        waiting = asyncio.create_task(_hold_briefly(locks, [X], order, "second"))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        order.append("first")
    await waiting
    assert order == ["first", "second"]


# --- two store replicas, two versions of one SOP Instance --------------------------------------


class PausingBlobs(LocalBlobs):
    """Pauses after moving an object into place, before its sidecar is written: the window in
    which another replica can write the same instance."""

    def __init__(self, root: Path, pause: float) -> None:
        super().__init__(root)
        self._pause = pause

    async def rename(self, src: str, dst: str) -> None:
        await super().rename(src, dst)
        await asyncio.sleep(self._pause)


async def _race(archive: Archive, tmp_path: Path, locks: list[InstanceLocks]) -> InstanceRecord:
    """Version 0 through a slow replica, version 1 through a fast one started a moment later;
    the sidecar the index names afterwards."""
    root = tmp_path / "objects"
    slow = Ingestor(PausingBlobs(root, 0.4), archive.bus, locks=locks[0])
    other_bus = await Bus.connect(archive.settings.nats_url, name="replica-2")
    try:
        fast = Ingestor(PausingBlobs(root, 0.0), other_bus, locks=locks[1])
        versions = [synthetic_instance(1, 1, 1, comment=f"version {n}") for n in range(2)]

        async def later(stow: Awaitable[InstanceOutcome]) -> InstanceOutcome:
            await asyncio.sleep(0.1)
            return await stow

        outcomes = await asyncio.gather(
            dataclasses.replace(archive, ingestor=slow).stow(versions[0]),
            later(dataclasses.replace(archive, ingestor=fast).stow(versions[1])),
        )
        assert all(o.stored for o in outcomes)
    finally:
        await other_bus.close()
    located = await archive.index.locate(
        LocateRequest(study_uid=study_uid(1), sop_uid=sop_uid(1, 1, 1))
    )
    (instance,) = located.instances
    record = InstanceRecord.model_validate_json(await archive.blobs.get(instance.sidecar_key))
    assert record.sha256 == instance.sha256, "the index and the sidecar disagree"
    return record


async def _stored_digest(archive: Archive, record: InstanceRecord) -> str:
    return hashlib.sha256(await archive.blobs.get(record.object_key)).hexdigest()


async def test_cluster_locks_keep_two_replicas_apart(tmp_path: Path) -> None:
    blobs = LocalBlobs(tmp_path / "objects")
    async with running_archive(tmp_path, blobs) as archive:
        first = await locks_of(archive.bus)
        other = await Bus.connect(archive.settings.nats_url, name="replica-2-locks")
        try:
            record = await _race(archive, tmp_path, [first, await locks_of(other)])
        finally:
            await other.close()
        assert await _stored_digest(archive, record) == record.sha256
        second = synthetic_instance(1, 1, 1, comment="version 1")
        assert record.sha256 == hashlib.sha256(second).hexdigest(), "the later version wins"


async def test_process_locks_alone_let_two_replicas_interleave(tmp_path: Path) -> None:
    """What ClusterLocks prevent: the fast replica's object under the slow one's sidecar."""
    blobs = LocalBlobs(tmp_path / "objects")
    async with running_archive(tmp_path, blobs) as archive:
        record = await _race(archive, tmp_path, [ProcessLocks(), ProcessLocks()])
        assert await _stored_digest(archive, record) != record.sha256
