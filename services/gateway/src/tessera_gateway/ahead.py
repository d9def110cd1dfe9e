"""Work started ahead, results taken in order: bounded concurrency for streamed responses."""

from __future__ import annotations

import asyncio
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
)
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


async def in_order(
    keys: Iterable[K] | AsyncIterable[K], start: Callable[[K], Awaitable[V]], ahead: int
) -> AsyncGenerator[tuple[K, V]]:
    """``(key, await start(key))`` in the order of ``keys``, with up to ``ahead`` + 1 under
    way; what is still under way when the consumer stops is cancelled."""
    pending: list[tuple[K, asyncio.Future[V]]] = []

    async def each() -> AsyncGenerator[K]:
        if isinstance(keys, AsyncIterable):
            async for key in keys:
                yield key
        else:
            for key in keys:
                yield key

    try:
        async for key in each():
            pending.append((key, asyncio.ensure_future(start(key))))
            if len(pending) > ahead:
                first, task = pending.pop(0)
                yield first, await task
        while pending:
            first, task = pending.pop(0)
            yield first, await task
    finally:
        for _, task in pending:
            task.cancel()


async def prefetched(items: AsyncIterator[V]) -> AsyncGenerator[V]:
    """``items``, the next one asked for while the consumer handles the current one (for
    pages whose request depends on the previous answer); cancelled when the consumer stops."""
    upcoming: asyncio.Future[V | None] = asyncio.ensure_future(anext(items, None))
    try:
        while (item := await upcoming) is not None:
            upcoming = asyncio.ensure_future(anext(items, None))
            yield item
    finally:
        upcoming.cancel()
