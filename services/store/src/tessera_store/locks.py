"""Who may change a SOP Instance at a time.

Ingest and deletion hold the locks of the SOP Instance UIDs they change from the duplicate
check until the index has answered, so that two versions racing in never interleave: without
them, one STOW could leave its object under the other's sidecar (a SHA-256 mismatch that
``tessera verify`` reports), or its index row over the other's bytes.

- ``ProcessLocks``: asyncio locks in this process. Enough when one store process writes, as
  in embedded mode (its analysis workers parse; they place nothing).
- ``ClusterLocks``: the same, plus a lease per SOP Instance UID in a JetStream key-value
  bucket, so that store replicas exclude each other (distributed mode, the default of
  ``tessera store``; ``TESSERA_INSTANCE_LOCKS``).

A lease is a key created only if absent (``create``). Its holder renews it every third of
``lease_seconds``; the bucket forgets a key that old, so the lease of a store killed while
holding it ends by itself. Several UIDs are taken all or none: when one is held elsewhere,
the ones taken are given back and the whole set is tried again after a random pause, so two
stores wanting overlapping sets cannot deadlock. Locks are always taken in sorted order in
this process.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager, suppress
from typing import Protocol
from weakref import WeakValueDictionary

import nats.errors
import nats.js.errors
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from tessera_common.bus import Bus
from tessera_common.errors import ErrorCode, TesseraError

log = logging.getLogger(__name__)

#: The key-value bucket of the leases.
BUCKET = "tessera_instance_locks"
#: Age at which a lease nobody renewed ends (a store killed while holding it).
LEASE_SECONDS = 30.0
#: How long to wait for a SOP Instance another store holds before giving up (503, retryable).
WAIT_SECONDS = 30.0
#: Leases asked for at once.
CONCURRENT_LEASES = 256


class InstanceLocks(Protocol):
    def hold(self, sop_uids: Iterable[str]) -> AbstractAsyncContextManager[None]:
        """Hold the locks of ``sop_uids`` for the ``async with`` block."""
        ...


class ProcessLocks:
    """One asyncio lock per SOP Instance UID in this process; unused ones are dropped."""

    def __init__(self) -> None:
        self._locks: WeakValueDictionary[str, asyncio.Lock] = WeakValueDictionary()

    def _lock(self, sop_uid: str) -> asyncio.Lock:
        lock = self._locks.get(sop_uid)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[sop_uid] = lock
        return lock

    @asynccontextmanager
    async def hold(self, sop_uids: Iterable[str]) -> AsyncIterator[None]:
        async with AsyncExitStack() as held:
            for sop_uid in sorted(set(sop_uids)):
                await held.enter_async_context(self._lock(sop_uid))
            yield


class ClusterLocks:
    """``ProcessLocks`` plus a lease per SOP Instance UID shared by every store replica."""

    def __init__(
        self,
        kv: KeyValue,
        *,
        lease_seconds: float = LEASE_SECONDS,
        wait_seconds: float = WAIT_SECONDS,
    ) -> None:
        self._kv = kv
        self._local = ProcessLocks()
        self._lease = lease_seconds
        self._wait = wait_seconds
        self._owner = uuid.uuid4().hex.encode()

    @classmethod
    async def open(
        cls,
        bus: Bus,
        *,
        replicas: int = 1,
        lease_seconds: float = LEASE_SECONDS,
        wait_seconds: float = WAIT_SECONDS,
    ) -> ClusterLocks:
        """The locks over the bucket ``BUCKET``, created if missing (``replicas`` copies)."""
        js = bus.jetstream
        try:
            kv = await js.key_value(BUCKET)
        except nats.js.errors.BucketNotFoundError:
            config = KeyValueConfig(
                bucket=BUCKET,
                history=1,
                ttl=lease_seconds,
                storage=StorageType.FILE,
                replicas=replicas,
            )
            kv = await js.create_key_value(config)
        return cls(kv, lease_seconds=lease_seconds, wait_seconds=wait_seconds)

    @asynccontextmanager
    async def hold(self, sop_uids: Iterable[str]) -> AsyncIterator[None]:
        uids = sorted(set(sop_uids))
        async with self._local.hold(uids):
            leases = await self._acquire(uids)
            renewing = asyncio.create_task(self._renew(leases))
            try:
                yield
            finally:
                renewing.cancel()
                with suppress(asyncio.CancelledError):
                    await renewing
                await self._release(leases)

    async def _acquire(self, uids: Sequence[str]) -> dict[str, int]:
        """A lease on every UID (key → revision), or TesseraError after ``wait_seconds``."""
        deadline = time.monotonic() + self._wait
        pause = 0.005
        while True:
            leases, busy = await self._try(uids)
            if busy is None:
                return leases
            await self._release(leases)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TesseraError(
                    ErrorCode.SERVICE_UNAVAILABLE,
                    f"instance {busy} is being stored or deleted by another request; "
                    "try again in a moment",
                )
            await asyncio.sleep(min(remaining, pause * random.uniform(0.5, 1.5)))  # noqa: S311 - jitter
            pause = min(pause * 2, 0.5)

    async def _try(self, uids: Sequence[str]) -> tuple[dict[str, int], str | None]:
        """The leases taken, and a UID held elsewhere (None when all were taken)."""
        leases: dict[str, int] = {}
        busy: str | None = None
        failure: BaseException | None = None
        for start in range(0, len(uids), CONCURRENT_LEASES):
            chunk = uids[start : start + CONCURRENT_LEASES]
            results = await asyncio.gather(
                *(self._kv.create(_key(uid), self._owner) for uid in chunk),
                return_exceptions=True,
            )
            for uid, result in zip(chunk, results, strict=True):
                if isinstance(result, int):
                    leases[uid] = result
                elif isinstance(result, nats.js.errors.KeyWrongLastSequenceError):
                    busy = busy or uid
                else:
                    failure = failure or result
            if busy is not None or failure is not None:
                break
        if failure is not None:
            await self._release(leases)
            raise _unavailable(failure)
        return leases, busy

    async def _renew(self, leases: dict[str, int]) -> None:
        """Renew ``leases`` (revisions updated in place) until cancelled."""
        while True:
            await asyncio.sleep(self._lease / 3)
            for uid, revision in list(leases.items()):
                try:
                    leases[uid] = await self._kv.update(_key(uid), self._owner, last=revision)
                except nats.js.errors.KeyWrongLastSequenceError:
                    log.error("the lease on an instance lapsed while it was being changed")
                    leases.pop(uid)
                except (nats.errors.Error, OSError):
                    log.warning("could not renew an instance lease; trying again", exc_info=True)

    async def _release(self, leases: dict[str, int]) -> None:
        async def release(uid: str, revision: int) -> None:
            try:
                await self._kv.delete(_key(uid), last=revision)
            except (nats.errors.Error, OSError):
                # Taken over after it lapsed, or NATS is away: the lease ends by its age.
                log.debug("could not release an instance lease", exc_info=True)

        await asyncio.gather(*(release(uid, revision) for uid, revision in leases.items()))
        leases.clear()


def _key(sop_uid: str) -> str:
    # Validated SOP Instance UIDs (digits and single dots) are valid key tokens.
    return f"sop.{sop_uid}"


def _unavailable(failure: BaseException) -> TesseraError:
    if isinstance(failure, nats.js.errors.InvalidKeyError):
        return TesseraError(ErrorCode.INVALID_UID, "invalid SOP Instance UID")
    return TesseraError(
        ErrorCode.SERVICE_UNAVAILABLE, f"instance locks are unavailable ({type(failure).__name__})"
    )
