"""What the durability tools (``reindex``, ``verify``, ``orphans``) share.

* **Tallies**: counts by outcome, the first problems found (with the object key and what is
  wrong, never a patient attribute) and a progress callback the CLI turns into a bar.
* **Bounded concurrency** over a streamed listing: at most ``concurrency`` objects in flight,
  whatever the archive's size (ARCHITECTURE invariant 5).
* **The index, two ways**: the tools take an index port. Against a stopped system that is the
  database itself (``tessera_query.service.open_index``, handed in by the caller so that this
  package does not import the query service); against a running one it is ``BusIndex``, the
  query service's own ``query.index`` and ``query.locate`` requests.
* **Is Tessera running?** ``running_system`` answers before a tool writes to an index that a
  live query service owns.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import nats
import nats.errors

from tessera_common.blobstore import BlobNotFoundError, BlobStore
from tessera_common.bus import Bus
from tessera_common.errors import ErrorCode, TesseraError
from tessera_common.messages import (
    IndexReply,
    IndexRequest,
    InstanceRecord,
    LocateReply,
    LocateRequest,
    Ping,
    Subject,
)
from tessera_common.settings import Settings

from .ingest import index_message

T = TypeVar("T")

#: Problems kept in a report for display; the counts always cover everything.
MAX_PROBLEMS_KEPT = 1000
#: Seconds a probe of a NATS server and its query service may take.
PROBE_SECONDS = 2.0

Progress = Callable[[str], None]
"""Called once per object handled with its outcome (e.g. ``"indexed"``, ``"error"``)."""


class MaintenanceRefusedError(Exception):
    """The tool will not run in this situation; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Problem:
    """Something wrong with one object: its key, a short kind and a sentence."""

    key: str
    kind: str
    detail: str


@dataclass(slots=True)
class Tally:
    """Counts by outcome and the first ``MAX_PROBLEMS_KEPT`` problems."""

    progress: Progress | None = None
    counts: Counter[str] = field(default_factory=Counter)
    problems: list[Problem] = field(default_factory=list)

    def count(self, outcome: str) -> None:
        self.counts[outcome] += 1
        if self.progress is not None:
            self.progress(outcome)

    def keep(self, problem: Problem) -> None:
        if len(self.problems) < MAX_PROBLEMS_KEPT:
            self.problems.append(problem)

    def problem(self, outcome: str, key: str, kind: str, detail: str) -> None:
        self.keep(Problem(key, kind, detail))
        self.count(outcome)


async def run_bounded(
    items: AsyncIterator[T], work: Callable[[T], Awaitable[None]], *, concurrency: int
) -> None:
    """Run ``work`` on every item of a streamed listing, at most ``concurrency`` at a time.

    The listing is read only as fast as work finishes. An exception from ``work`` cancels the
    rest and propagates: per-object problems are tallied by ``work`` itself, so what arrives
    here is a failure of the whole run (the index is unreachable, say)."""
    slots = asyncio.Semaphore(max(concurrency, 1))

    async def one(item: T) -> None:
        try:
            await work(item)
        finally:
            slots.release()

    async with asyncio.TaskGroup() as group:
        async for item in items:
            await slots.acquire()
            group.create_task(one(item))


async def sha256_of(blobs: BlobStore, key: str) -> tuple[str, int]:
    """The SHA-256 (hex) and size of an object, streamed; hashing runs in worker threads
    (hashlib releases the GIL), so several objects hash in parallel off the event loop."""
    digest = hashlib.sha256()
    size = 0
    async for chunk in blobs.stream(key):
        size += len(chunk)
        await asyncio.to_thread(digest.update, chunk)
    return digest.hexdigest(), size


async def read_record(blobs: BlobStore, key: str) -> InstanceRecord | None:
    """The ``InstanceRecord`` in the sidecar at ``key``; None when it is missing. Raises
    ``pydantic.ValidationError`` when it is not a record."""
    try:
        data = await blobs.get(key)
    except BlobNotFoundError:
        return None
    return await asyncio.to_thread(InstanceRecord.model_validate_json, data)


# --- the index ports -----------------------------------------------------------------------


class IndexWriter(Protocol):
    """What ``reindex`` needs of the index (``tessera_query.index.Index`` has it)."""

    async def upsert(self, record: InstanceRecord, metadata: Mapping[str, Any]) -> IndexReply: ...


class InstanceLocator(Protocol):
    """What ``verify`` needs of the index (``tessera_query.index.Index`` has it)."""

    async def locate(self, req: LocateRequest) -> LocateReply: ...


class MaintainedIndex(IndexWriter, InstanceLocator, Protocol):
    async def close(self) -> None: ...


OpenIndex = Callable[[Settings], Awaitable[MaintainedIndex]]
"""Opens the index the settings name: ``tessera_query.service.open_index``."""


class BusIndex:
    """The index of a running system, through its query service (queue group ``query``).

    Writes go through ``query.index`` exactly like the store's, so the query service stays
    the index's only writer, whichever backend it runs."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus

    async def upsert(self, record: InstanceRecord, metadata: Mapping[str, Any]) -> IndexReply:
        full = record.model_copy(update={"metadata": dict(metadata)})
        return await self._bus.request(
            Subject.QUERY_INDEX, IndexRequest(record=index_message(full)), IndexReply
        )

    async def locate(self, req: LocateRequest) -> LocateReply:
        try:
            return await self._bus.request(Subject.QUERY_LOCATE, req, LocateReply)
        except TesseraError as error:
            if error.code is ErrorCode.NOT_FOUND:
                return LocateReply(instances=[])
            raise

    async def close(self) -> None:
        await self._bus.close()


# --- is Tessera running? -------------------------------------------------------------------


def embedded_supervisor(data_dir: Path) -> int | None:
    """The pid of a ``tessera serve`` running on ``data_dir``, if any (``run/supervisor.pid``
    written by ``tessera.supervisor``)."""
    try:
        pid = int((data_dir / "run" / "supervisor.pid").read_text())
    except (OSError, ValueError):
        return None
    return pid if pid != os.getpid() and _alive(pid) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError):
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        return state != "Z"
    return True


_LISTEN = re.compile(r'^listen:\s*(".*")\s*$', re.MULTILINE)


def embedded_nats_url(data_dir: Path) -> str | None:
    """The URL of the private NATS server of a ``tessera serve`` running on ``data_dir``, read
    from the configuration it wrote (``nats/nats-server.conf``, ``tessera.natsd``)."""
    if embedded_supervisor(data_dir) is None:
        return None
    try:
        match = _LISTEN.search((data_dir / "nats" / "nats-server.conf").read_text())
    except OSError:
        return None
    if match is None:
        return None
    address = json.loads(match[1])
    return f"nats://{address}" if isinstance(address, str) else None


async def query_service_answers(url: str) -> bool | None:
    """True when a query service answers ``query.ping`` on the NATS server at ``url``; False
    when none does or nothing listens there; None when the server could not be asked (it
    refused us, say), so nobody can tell."""
    errors: list[Exception] = []

    async def on_error(error: Exception) -> None:
        errors.append(error)

    try:
        client = await asyncio.wait_for(
            nats.connect(
                url,
                connect_timeout=PROBE_SECONDS,
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.1,
                error_cb=on_error,
            ),
            timeout=PROBE_SECONDS * 3,
        )
    except (nats.errors.Error, OSError, TimeoutError):
        refused = bool(errors) and all(isinstance(e, ConnectionRefusedError) for e in errors)
        return False if refused else None
    try:
        await client.request(Subject.QUERY_PING, Ping().model_dump_json().encode(), PROBE_SECONDS)
    except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
        return False
    finally:
        await client.close()
    return True


async def running_system(settings: Settings) -> str | None:
    """What of Tessera is running on these settings' data: a sentence, or None.

    Looks for an embedded ``tessera serve`` on the data directory and for a query service
    answering on ``TESSERA_NATS_URL``."""
    pid = embedded_supervisor(settings.data_dir)
    if pid is not None:
        return f"'tessera serve' (pid {pid}) is running on {settings.data_dir.absolute()}"
    answers = await query_service_answers(settings.nats_url)
    if answers:
        return f"a query service answers on {settings.nats_url}"
    if answers is None:
        return (
            f"the NATS server at {settings.nats_url} did not let us ask whether a query "
            "service is running"
        )
    return None


async def connect_live(settings: Settings) -> Bus:
    """A bus connection to the running system (the embedded one on the data directory, else
    ``TESSERA_NATS_URL``) on which a query service answers."""
    url = embedded_nats_url(settings.data_dir) or settings.nats_url
    if not await query_service_answers(url):
        raise MaintenanceRefusedError(
            f"no query service answers on {url}: --live works only while Tessera runs "
            "(start it, or leave out --live to work on a stopped system)"
        )
    return await Bus.connect(url, name="tessera-maintenance", request_timeout=60.0)
