"""Series ``/metadata`` documents built ahead, a moment after a series stops changing.

A viewer asks for a series' metadata first thing, often right after the series arrived. The
gateway builds the document on its first request (pages of ``query.metadata``, joined); here
the query service builds it beforehand, from the index in this process, a few seconds after
the last instance of the series was indexed through it (``QUIET_SECONDS``; a series that
keeps changing is built at least every ``LONGEST_WAIT_SECONDS``). The document is the one the
gateway would build, with its BulkDataURIs still relative to the service root (the root is a
property of the request), stored at ``metadata_document_key`` under the digest of
``RELATIVE_ROOT`` and the series' contents. The gateway finds it by the same digest, prefixes
its root, serves it and caches its own forms.

Builds run one at a time in one background task, so they never compete with requests for
more than one thread. The contents are read before and after the pages: a series that
changed in between is not stored (its next change schedules it again). A document already
stored under the digest is not built again. Everything here is an optimisation: a failure is
logged and the gateway builds the document itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from collections.abc import AsyncIterator, Iterable
from typing import IO

from tessera_common.blobstore import BlobStore
from tessera_common.layout import RELATIVE_ROOT, metadata_document_digest, metadata_document_key
from tessera_common.messages import InstanceRecord, LocateRequest, MetadataRequest

from .index import Index

log = logging.getLogger(__name__)

#: A series is built once it has had no new instance for this long.
QUIET_SECONDS = 2.0
#: A series that keeps changing is built at least this often.
LONGEST_WAIT_SECONDS = 30.0
#: Smaller series are left to the gateway: their document is a page or two, built on request in
#: a few milliseconds, and building every small series during a bulk load cost a sixth of the
#: ingest rate.
MIN_INSTANCES = 64
#: Documents are spooled in memory up to this size, on disk beyond (bounded memory).
SPOOL_BYTES = 8 * 1024 * 1024
CHUNK_BYTES = 1024 * 1024


class SeriesDocuments:
    """Schedules and builds the root-relative series documents (see the module docstring)."""

    def __init__(
        self,
        index: Index,
        blobs: BlobStore,
        *,
        quiet_seconds: float = QUIET_SECONDS,
        longest_wait_seconds: float = LONGEST_WAIT_SECONDS,
        min_instances: int = MIN_INSTANCES,
    ) -> None:
        self._index = index
        self._min_instances = min_instances
        self._blobs = blobs
        self._quiet = quiet_seconds
        self._longest = longest_wait_seconds
        #: (study, series) → (first change not built yet, last change), monotonic seconds.
        self._pending: dict[tuple[str, str], tuple[float, float]] = {}
        self._wake = asyncio.Event()
        self.built = 0

    def changed(self, records: Iterable[InstanceRecord]) -> None:
        """Instances of these records' series were indexed just now."""
        now = time.monotonic()
        for record in records:
            series = (record.study_uid, record.series_uid)
            first, _ = self._pending.get(series, (now, now))
            self._pending[series] = (first, now)
        self._wake.set()

    async def run(self) -> None:
        """Build the series that are due, one at a time, until cancelled."""
        while True:
            due, wait = self._due(time.monotonic())
            if due is None:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
                continue
            del self._pending[due]
            try:
                await self.build(*due)
            except Exception:
                log.warning("building a series metadata document ahead failed", exc_info=True)

    def _due(self, now: float) -> tuple[tuple[str, str] | None, float | None]:
        """The series to build now, else None and how long until one is due."""
        soonest: float | None = None
        for series, (first, last) in self._pending.items():
            at = min(last + self._quiet, first + self._longest)
            if at <= now:
                return series, None
            soonest = at if soonest is None else min(soonest, at)
        return None, None if soonest is None else soonest - now

    async def build(self, study_uid: str, series_uid: str) -> str | None:
        """Store the root-relative document of the series; its key, or None when there was
        nothing to store (fewer than ``min_instances``, already stored, or changed while
        read)."""
        where = LocateRequest(study_uid=study_uid, series_uid=series_uid)
        contents = await self._index.contents(where)
        if contents.count < self._min_instances:
            return None
        document_digest = metadata_document_digest(RELATIVE_ROOT, contents.digest)
        key = metadata_document_key(study_uid, series_uid, document_digest) + ".json"
        if await self._blobs.head(key) is not None:
            return None
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
            count = await self._read(study_uid, series_uid, spool)
            if count != contents.count or await self._index.contents(where) != contents:
                return None
            if spool.tell() <= SPOOL_BYTES:
                spool.seek(0)
                await self._blobs.put(key, spool.read())
            else:
                await self._blobs.put_stream(key, _chunks(spool))
        self.built += 1
        return key

    async def _read(self, study_uid: str, series_uid: str, spool: IO[bytes]) -> int:
        """Write the document to ``spool``, as the gateway joins it; how many instances."""
        count = 0
        separator = b"["
        ask = MetadataRequest(study_uid=study_uid, series_uid=series_uid)
        while True:
            page = await self._index.metadata_page(ask)
            if page.documents:
                spool.write(separator + ",".join(page.documents).encode())
                separator = b","
                count += len(page.documents)
            if page.next_offset is None:
                break
            ask = ask.model_copy(update={"offset": page.next_offset})
        spool.write(b"[]" if separator == b"[" else b"]")
        return count


async def _chunks(spool: IO[bytes]) -> AsyncIterator[bytes]:
    spool.seek(0)
    while chunk := spool.read(CHUNK_BYTES):
        yield chunk
