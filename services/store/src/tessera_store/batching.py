"""How the store cuts a STOW request's batch into work: rounds of distinct SOP Instance UIDs,
``query.index_batch`` pages, and gathering that keeps per-instance failures as values.

Messages stay far below the 1 MiB NATS limit (ARCHITECTURE invariant 6): an index page holds
at most ``MAX_INDEX_BATCH`` records and ``PAGE_BYTES``, and a record whose metadata is large
travels without it (the query service reads the sidecar).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar, cast

import orjson

from tessera_common.messages import (
    INLINE_RECORD_BYTES,
    MAX_INDEX_BATCH,
    PAGE_BYTES,
    InstanceRecord,
)

T = TypeVar("T")
#: Room for the JSON around a record in an ``IndexBatchRequest``.
_RECORD_OVERHEAD = 64


def index_message(record: InstanceRecord) -> InstanceRecord:
    """``record`` as sent in ``query.index``: large metadata travels by reference (the sidecar)
    so the message stays small (ARCHITECTURE invariant 6)."""
    if record.metadata is None or len(orjson.dumps(record.metadata)) <= INLINE_RECORD_BYTES:
        return record
    return record.model_copy(update={"metadata": None})


def index_pages(
    records: Sequence[InstanceRecord],
) -> list[list[tuple[InstanceRecord, InstanceRecord]]]:
    """(record, message as sent) pairs cut into ``query.index_batch`` requests of at most
    ``MAX_INDEX_BATCH`` records and ``PAGE_BYTES``."""
    pages: list[list[tuple[InstanceRecord, InstanceRecord]]] = []
    size = 0
    for record in records:
        message = index_message(record)
        length = len(message.model_dump_json()) + _RECORD_OVERHEAD
        if not pages or len(pages[-1]) >= MAX_INDEX_BATCH or size + length > PAGE_BYTES:
            pages.append([])
            size = 0
        pages[-1].append((record, message))
        size += length
    return pages


def rounds(items: Sequence[T], *, key: Callable[[T], str]) -> list[list[T]]:
    """Split ``items`` so that no ``key`` (SOP Instance UID) occurs twice in one round: its
    n-th occurrence goes in round n, so repeats are ingested in the order they were sent."""
    result: list[list[T]] = []
    seen: dict[str, int] = {}
    for item in items:
        n = seen.get(key(item), 0)
        seen[key(item)] = n + 1
        if n == len(result):
            result.append([])
        result[n].append(item)
    return result


async def settled(*awaitables: Awaitable[T]) -> list[T | Exception]:
    """``asyncio.gather`` that returns each failure in place of its result (per-instance
    outcomes are values); a cancellation still propagates."""
    results = await asyncio.gather(*awaitables, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, Exception):
            raise result
    return cast(list[T | Exception], results)
