"""The query service's catch-up on stored events (``QueryService.on_event``) skips what the
same process indexed from the STOW itself, without asking the index; anything else is still
looked up (and indexed if missing)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.support.qido_corpus import corpus

from tessera_common.blobstore import LocalBlobs
from tessera_common.messages import IndexBatchRequest, InstanceRecord, InstanceStoredEvent
from tessera_query.index import ThreadedIndex
from tessera_query.service import QueryService
from tessera_query.sqlite_index import SqliteIndex


class CountingIndex(ThreadedIndex):
    """A real SQLite index that counts the lookups the catch-up makes."""

    lookups = 0

    async def contains(self, sop_uid: str, sha256: str) -> bool:
        self.lookups += 1
        return await super().contains(sop_uid, sha256)


def stored_event(record: InstanceRecord) -> InstanceStoredEvent:
    return InstanceStoredEvent.of(record).model_copy(
        update={"stored_at": "2024-01-01T00:00:00+00:00"}  # old: no catch-up delay
    )


def with_metadata(items: Sequence[tuple[InstanceRecord, Any]]) -> list[InstanceRecord]:
    return [record.model_copy(update={"metadata": dict(metadata)}) for record, metadata in items]


async def test_events_of_instances_this_process_indexed_need_no_lookup(tmp_path: Path) -> None:
    index = CountingIndex(SqliteIndex(tmp_path / "index.sqlite"))
    service = QueryService(index, LocalBlobs(tmp_path / "objects"))
    mine, others = corpus().instances[:3], corpus().instances[3:5]
    await service.index_batch(IndexBatchRequest(records=with_metadata(mine)))
    await index.upsert_many(others)  # indexed by another query process
    for record, _ in mine:
        await service.on_event(stored_event(record))
    assert index.lookups == 0
    for record, _ in others:
        await service.on_event(stored_event(record))
    assert index.lookups == len(others)
    replaced = mine[0][0].model_copy(update={"sha256": "ff" * 32})
    await service.on_event(stored_event(replaced))  # other bytes: looked up (sidecar missing)
    assert index.lookups == len(others) + 1
    await index.close()
