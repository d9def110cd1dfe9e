"""The index port: what the query service needs from its database.

``Index`` is asynchronous, because the production database is reached over the network
(``MongoIndex`` on pymongo's ``AsyncMongoClient``). The embedded database is SQLite, whose
driver is synchronous: ``SqliteIndex`` implements the same operations as plain methods
(``BlockingIndex``) and ``ThreadedIndex`` adapts it, running each call in a worker thread so
the event loop never waits on the disk (ARCHITECTURE invariant 7).

Every implementation is driven by the same parsed ``SearchRequest`` and must return the same
results for it; one reference table of searches runs against each (tests/**/test_query_*).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from tessera_common.messages import (
    ContentsReply,
    IndexReply,
    InstanceRecord,
    LocatedInstance,
    LocateReply,
    LocateRequest,
    MetadataReply,
    MetadataRequest,
    SearchReply,
    SearchRequest,
)


class Index(Protocol):
    async def upsert(self, record: InstanceRecord, metadata: Mapping[str, Any]) -> IndexReply:
        """Index one stored instance, keyed by SOP Instance UID; idempotent. ``metadata`` is
        its full DICOM JSON. The reply says whether an instance with that UID was replaced
        and names its objects."""
        ...

    async def upsert_many(
        self, items: Sequence[tuple[InstanceRecord, Mapping[str, Any]]]
    ) -> list[IndexReply]:
        """``upsert`` for each (record, metadata) in order, one reply each; SQLite applies
        them in one transaction (all visible together, or none)."""
        ...

    async def delete(self, sop_uids: Sequence[str]) -> list[LocatedInstance]:
        """Remove these instances, then the series and studies they leave empty; the entries
        removed (UIDs not indexed are ignored, so deleting twice is harmless)."""
        ...

    async def contains(self, sop_uid: str, sha256: str) -> bool:
        """True when the instance is indexed with exactly these stored bytes."""
        ...

    async def search(self, req: SearchRequest) -> SearchReply:
        """One page of QIDO-RS results (PS3.18 §10.6), cut to fit ``PAGE_BYTES``."""
        ...

    async def locate(self, req: LocateRequest) -> LocateReply:
        """The stored objects of a study, series or instance, for WADO-RS retrieval."""
        ...

    async def contents(self, req: LocateRequest) -> ContentsReply:
        """How many instances ``req`` names, and their ``contents_digest`` in retrieve order."""
        ...

    async def instance_metadata(self, sop_uid: str) -> str | None:
        """The instance's full DICOM JSON as stored, or None when it is not indexed."""
        ...

    async def metadata_page(self, req: MetadataRequest) -> MetadataReply:
        """Stored instance JSON documents in retrieve order, cut below PAGE_BYTES."""
        ...

    async def ping(self) -> bool:
        """True when the database answers."""
        ...

    async def close(self) -> None: ...


class BlockingIndex(Protocol):
    """The same operations as ``Index``, as blocking calls (``SqliteIndex``)."""

    def upsert(self, record: InstanceRecord, metadata: Mapping[str, Any]) -> IndexReply: ...
    def upsert_many(
        self, items: Sequence[tuple[InstanceRecord, Mapping[str, Any]]]
    ) -> list[IndexReply]: ...
    def delete(self, sop_uids: Sequence[str]) -> list[LocatedInstance]: ...
    def contains(self, sop_uid: str, sha256: str) -> bool: ...
    def search(self, req: SearchRequest) -> SearchReply: ...
    def locate(self, req: LocateRequest) -> LocateReply: ...
    def contents(self, req: LocateRequest) -> ContentsReply: ...
    def instance_metadata(self, sop_uid: str) -> str | None: ...
    def metadata_page(self, req: MetadataRequest) -> MetadataReply: ...
    def ping(self) -> bool: ...
    def close(self) -> None: ...


class ThreadedIndex:
    """An ``Index`` over a ``BlockingIndex``: every call runs in a worker thread."""

    def __init__(self, index: BlockingIndex) -> None:
        self.blocking = index

    async def upsert(self, record: InstanceRecord, metadata: Mapping[str, Any]) -> IndexReply:
        return await asyncio.to_thread(self.blocking.upsert, record, metadata)

    async def upsert_many(
        self, items: Sequence[tuple[InstanceRecord, Mapping[str, Any]]]
    ) -> list[IndexReply]:
        return await asyncio.to_thread(self.blocking.upsert_many, items)

    async def delete(self, sop_uids: Sequence[str]) -> list[LocatedInstance]:
        return await asyncio.to_thread(self.blocking.delete, sop_uids)

    async def contains(self, sop_uid: str, sha256: str) -> bool:
        return await asyncio.to_thread(self.blocking.contains, sop_uid, sha256)

    async def search(self, req: SearchRequest) -> SearchReply:
        return await asyncio.to_thread(self.blocking.search, req)

    async def locate(self, req: LocateRequest) -> LocateReply:
        return await asyncio.to_thread(self.blocking.locate, req)

    async def contents(self, req: LocateRequest) -> ContentsReply:
        return await asyncio.to_thread(self.blocking.contents, req)

    async def instance_metadata(self, sop_uid: str) -> str | None:
        return await asyncio.to_thread(self.blocking.instance_metadata, sop_uid)

    async def metadata_page(self, req: MetadataRequest) -> MetadataReply:
        return await asyncio.to_thread(self.blocking.metadata_page, req)

    async def ping(self) -> bool:
        return await asyncio.to_thread(self.blocking.ping)

    async def close(self) -> None:
        await asyncio.to_thread(self.blocking.close)
