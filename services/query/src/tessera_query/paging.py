"""Cutting replies into pages below the bus message limit (ARCHITECTURE invariant 6)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

from tessera_common.messages import PAGE_BYTES

#: UIDs read per batch when fetching a page's documents; far below SQLite's parameter limit.
BATCH = 200

_T = TypeVar("_T")


def batches(items: Sequence[_T], size: int = BATCH) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class PageBudget:
    """Counts serialized bytes so a page stays under ``PAGE_BYTES``; the first item always
    fits, so every page makes progress."""

    def __init__(self, limit: int = PAGE_BYTES) -> None:
        self._limit = limit
        self._used = 0
        self._count = 0

    def admit(self, size: int) -> bool:
        if self._count and self._used + size > self._limit:
            return False
        self._used += size
        self._count += 1
        return True
