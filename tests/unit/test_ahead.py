"""``ahead.prefetched``: the next page is asked for while the current one is handled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from tessera_gateway.ahead import in_order, prefetched


async def test_the_next_item_is_under_way_while_the_consumer_works() -> None:
    events: list[str] = []

    async def pages() -> AsyncIterator[int]:
        for number in range(3):
            await asyncio.sleep(0.01)
            events.append(f"fetched {number}")
            yield number

    async for number in prefetched(pages()):
        await asyncio.sleep(0.03)
        events.append(f"handled {number}")
    assert events == [
        "fetched 0",
        "fetched 1",
        "handled 0",
        "fetched 2",
        "handled 1",
        "handled 2",
    ]


async def test_stopping_early_cancels_the_fetch_under_way() -> None:
    finished: list[int] = []

    async def pages() -> AsyncIterator[int]:
        for number in range(5):
            await asyncio.sleep(0.01)
            finished.append(number)
            yield number

    async for number in prefetched(pages()):
        if number == 1:
            break
    await asyncio.sleep(0.05)
    assert finished == [0, 1]


async def test_in_order_keeps_the_order_of_keys() -> None:
    async def slow_square(n: int) -> int:
        await asyncio.sleep(0.01 * (5 - n))
        return n * n

    results = [pair async for pair in in_order(range(5), slow_square, ahead=3)]
    assert results == [(n, n * n) for n in range(5)]
