"""mongomock behind the slice of pymongo's async API that ``MongoIndex`` uses.

No MongoDB server runs on our CI machines, so the MongoDB index is proven by executing its
filters in-process: mongomock evaluates the very filter documents, sorts, projections and
aggregation pipelines ``MongoIndex`` sends, through these thin awaitable wrappers
(``AsyncDatabase`` → ``AsyncCollection`` → ``AsyncCursor``). The containers tier runs the same
suite against a real server.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import mongomock


class AsyncCursor:
    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def sort(self, keys: list[tuple[str, int]]) -> AsyncCursor:
        self._cursor = self._cursor.sort(keys)
        return self

    def skip(self, count: int) -> AsyncCursor:
        self._cursor = self._cursor.skip(count)
        return self

    def limit(self, count: int) -> AsyncCursor:
        self._cursor = self._cursor.limit(count)
        return self

    async def to_list(self, length: int | None = None) -> list[dict[str, Any]]:
        found = list(self._cursor)
        return found if length is None else found[:length]

    def __aiter__(self) -> AsyncCursor:
        self._iterator: Iterator[dict[str, Any]] = iter(self._cursor)
        return self

    async def __anext__(self) -> dict[str, Any]:
        try:
            return next(self._iterator)
        except StopIteration:
            raise StopAsyncIteration from None


class AsyncCollection:
    def __init__(self, collection: mongomock.Collection) -> None:
        self._collection = collection
        self.filters: list[dict[str, Any]] = []

    def find(self, *args: Any, **kwargs: Any) -> AsyncCursor:
        if args:
            self.filters.append(args[0])
        return AsyncCursor(self._collection.find(*args, **kwargs))

    async def find_one(self, *args: Any, **kwargs: Any) -> Any:
        return self._collection.find_one(*args, **kwargs)

    async def replace_one(self, *args: Any, **kwargs: Any) -> Any:
        return self._collection.replace_one(*args, **kwargs)

    async def update_one(self, *args: Any, **kwargs: Any) -> Any:
        return self._collection.update_one(*args, **kwargs)

    async def update_many(self, *args: Any, **kwargs: Any) -> Any:
        return self._collection.update_many(*args, **kwargs)

    async def delete_one(self, *args: Any, **kwargs: Any) -> Any:
        return self._collection.delete_one(*args, **kwargs)

    async def delete_many(self, *args: Any, **kwargs: Any) -> Any:
        return self._collection.delete_many(*args, **kwargs)

    async def distinct(self, *args: Any, **kwargs: Any) -> Any:
        return self._collection.distinct(*args, **kwargs)

    async def count_documents(self, *args: Any, **kwargs: Any) -> int:
        return int(self._collection.count_documents(*args, **kwargs))

    async def create_index(self, *args: Any, **kwargs: Any) -> Any:
        return self._collection.create_index(*args, **kwargs)

    async def aggregate(self, pipeline: list[dict[str, Any]]) -> AsyncCursor:
        return AsyncCursor(self._collection.aggregate(pipeline))


class AsyncDatabase:
    def __init__(self, name: str = "tessera") -> None:
        self._database = mongomock.MongoClient()[name]
        self._collections: dict[str, AsyncCollection] = {}

    def __getitem__(self, name: str) -> AsyncCollection:
        if name not in self._collections:
            self._collections[name] = AsyncCollection(self._database[name])
        return self._collections[name]

    async def command(self, name: str) -> dict[str, Any]:
        return {"ok": 1.0}
