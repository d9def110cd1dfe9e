"""The change feed read out of the durable event stream ``TESSERA_EVENTS`` (docs/EVENTS.md).

Messages are read by stream sequence with JetStream's message get (``STREAM.MSG.GET``): no
consumer is created per HTTP request, every replica reads the same sequence numbers, and a page
never holds more than ``READ_AHEAD`` messages and sidecars at a time. A ``startTime`` is turned
into a sequence by bisection over the stream's timestamps, which grow with the sequence.

The ``State`` of a ``create`` entry is found by reading the instance's sidecar (the record the
store wrote next to the object; ARCHITECTURE invariant 4: object storage is the system of
record) and comparing its SHA-256 with the event's; the same read gives the ``Metadata``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import nats.js.errors
import orjson
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg

from tessera_common.blobstore import BlobNotFoundError, BlobStore
from tessera_common.messages import EVENTS_STREAM

from .changefeed_model import (
    Action,
    ChangeEvent,
    ChangeFeedQuery,
    State,
    change_event,
    entry_document,
    entry_state,
)
from .metadata import BULKDATA_KEY

#: Messages read, and sidecars looked up, concurrently.
READ_AHEAD = 16
#: A page stops early (with at least one entry) once it has taken this long; the client asks
#: again from the last ``Sequence`` it got.
TIME_BUDGET_SECONDS = 10.0
#: ``/changefeed/latest`` looks this far back for an instance change.
LATEST_LOOKBACK = 64
ANY_EVENT = "tessera.v1.events.>"


@dataclass(frozen=True, slots=True)
class StreamBounds:
    """The sequences the stream holds now: ``first`` … ``last``; empty when first > last.
    Sequences below ``first`` have aged out (the stream's ``max_age``)."""

    first: int
    last: int


class EventLog:
    """The change feed of one event stream, with sidecars from ``blobs``."""

    def __init__(
        self,
        js: JetStreamContext,
        blobs: BlobStore,
        *,
        stream: str = EVENTS_STREAM,
        time_budget: float = TIME_BUDGET_SECONDS,
        read_ahead: int = READ_AHEAD,
    ) -> None:
        self._js = js
        self._blobs = blobs
        self._stream = stream
        self._time_budget = time_budget
        self._read_ahead = read_ahead

    async def bounds(self) -> StreamBounds:
        try:
            info = await self._js.stream_info(self._stream)
        except nats.js.errors.NotFoundError:
            return StreamBounds(1, 0)  # nothing was ever stored: the stream is made on first use
        state = info.state
        if state.messages == 0:
            return StreamBounds(state.last_seq + 1, state.last_seq)
        return StreamBounds(state.first_seq, state.last_seq)

    async def entries(
        self, query: ChangeFeedQuery, bounds: StreamBounds, *, service_root: str
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The entries ``query`` asks for, oldest first; stops at ``query.limit``, at
        ``bounds.last``, at ``query.end_time`` or when the time budget is spent."""
        deadline = time.monotonic() + self._time_budget
        remaining = query.limit
        sequence = await self._start(query, bounds)
        while remaining > 0 and sequence <= bounds.last:
            stop = min(sequence + min(self._read_ahead, remaining), bounds.last + 1)
            messages = await asyncio.gather(*(self._get(s) for s in range(sequence, stop)))
            events, ended = _events(messages, query.end_time)
            documents = await asyncio.gather(
                *(self._document(e, query.include_metadata, service_root) for e in events)
            )
            for document in documents:
                yield document
            remaining -= len(documents)
            sequence = stop
            if ended or (time.monotonic() > deadline and remaining < query.limit):
                return

    async def latest(self, *, include_metadata: bool, service_root: str) -> dict[str, Any] | None:
        """The newest entry, or None when the stream holds none."""
        bounds = await self.bounds()
        low = max(bounds.first, bounds.last - LATEST_LOOKBACK + 1)
        for sequence in range(bounds.last, low - 1, -1):
            events, _ = _events([await self._get(sequence)], None)
            if events:
                return await self._document(events[0], include_metadata, service_root)
        return None

    async def document(self, event: ChangeEvent) -> dict[str, Any]:
        """The entry of ``event`` without metadata (the webhook payload)."""
        return await self._document(event, False, "")

    async def _start(self, query: ChangeFeedQuery, bounds: StreamBounds) -> int:
        """The first sequence to read: after ``offset``, at or after ``start_time``."""
        low = max(query.offset + 1, bounds.first)
        if query.start_time is None:
            return low
        high = bounds.last + 1
        while low < high:
            middle = (low + high) // 2
            found = await self._get_next(middle)
            if found is None or found.time is None or found.time >= query.start_time:
                high = middle
            else:
                low = middle + 1
        return low

    async def _get(self, sequence: int) -> RawStreamMsg | None:
        try:
            return await self._js.get_msg(self._stream, seq=sequence)
        except nats.js.errors.NotFoundError:
            return None  # aged out (or removed) since the bounds were read

    async def _get_next(self, sequence: int) -> RawStreamMsg | None:
        """The first message at or after ``sequence``."""
        try:
            return await self._js.get_msg(self._stream, seq=sequence, subject=ANY_EVENT, next=True)
        except nats.js.errors.NotFoundError:
            return None

    async def _document(
        self, event: ChangeEvent, include_metadata: bool, service_root: str
    ) -> dict[str, Any]:
        if event.action is Action.DELETE or event.sidecar_key is None:
            return entry_document(event, State.DELETED, include_metadata=include_metadata)
        record = await self._sidecar(event.sidecar_key)
        stored_sha256 = record.get("sha256") if record is not None else None
        state = entry_state(event, stored_sha256 if isinstance(stored_sha256, str) else None)
        metadata = None
        if include_metadata and state is State.CURRENT and record is not None:
            metadata = _absolute(record.get("metadata"), service_root)
        return entry_document(event, state, include_metadata=include_metadata, metadata=metadata)

    async def _sidecar(self, key: str) -> dict[str, Any] | None:
        try:
            data = await self._blobs.get(key)
        except BlobNotFoundError:
            return None
        try:
            record = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
        return record if isinstance(record, dict) else None


def _events(
    messages: Sequence[RawStreamMsg | None], end_time: datetime | None
) -> tuple[list[ChangeEvent], bool]:
    """The instance changes among ``messages``, and whether ``end_time`` was reached."""
    events: list[ChangeEvent] = []
    for message in messages:
        if message is None or message.seq is None or message.time is None:
            continue
        if end_time is not None and message.time >= end_time:
            return events, True
        event = change_event(message.seq, message.time, message.subject or "", message.data or b"")
        if event is not None:
            events.append(event)
    return events, False


def _absolute(metadata: Any, service_root: str) -> orjson.Fragment | None:
    """The sidecar's DICOM JSON with its BulkDataURIs (relative to the service root) made
    absolute, as WADO-RS ``/metadata`` serves them."""
    if not isinstance(metadata, dict):
        return None
    prefix = BULKDATA_KEY + service_root.encode() + b"/"
    return orjson.Fragment(orjson.dumps(metadata).replace(BULKDATA_KEY, prefix))
