"""The index port: what the query service needs from its database.

Two implementations share this contract: ``SqliteIndex`` (embedded mode) and, later, a MongoDB
index (distributed mode). Both are driven by the same parsed ``SearchRequest`` and must return
the same results for it, so one contract test suite can run against either. Methods are
synchronous; the service calls them off the event loop (``asyncio.to_thread``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from tessera_common.messages import (
    IndexReply,
    InstanceRecord,
    LocateReply,
    LocateRequest,
    MetadataReply,
    MetadataRequest,
    SearchReply,
    SearchRequest,
)


class Index(Protocol):
    def upsert(self, record: InstanceRecord, metadata: Mapping[str, Any]) -> IndexReply:
        """Index one stored instance, keyed by SOP Instance UID; idempotent. ``metadata`` is
        its full DICOM JSON. The reply says whether an instance with that UID was replaced
        and names its objects."""
        ...

    def contains(self, sop_uid: str, sha256: str) -> bool:
        """True when the instance is indexed with exactly these stored bytes."""
        ...

    def search(self, req: SearchRequest) -> SearchReply:
        """One page of QIDO-RS results (PS3.18 §10.6), cut to fit ``PAGE_BYTES``."""
        ...

    def locate(self, req: LocateRequest) -> LocateReply:
        """The stored objects of a study, series or instance, for WADO-RS retrieval."""
        ...

    def instance_metadata(self, sop_uid: str) -> str | None:
        """The instance's full DICOM JSON as stored, or None when it is not indexed."""
        ...

    def metadata_page(self, req: MetadataRequest) -> MetadataReply:
        """Stored instance JSON documents in retrieve order, cut below PAGE_BYTES."""
        ...

    def ping(self) -> bool:
        """True when the database answers."""
        ...

    def close(self) -> None: ...
