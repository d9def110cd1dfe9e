"""Series metadata documents built ahead by the query service (``SeriesDocuments``), on a real
nats-server, SQLite and a local object store: what is stored and under which key, when a build
runs, and what is never stored."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
from tests.support.archive import running_archive, series_uid, study_uid, synthetic_instance

from tessera_common.blobstore import LocalBlobs
from tessera_common.layout import RELATIVE_ROOT, metadata_document_digest, metadata_document_key
from tessera_common.messages import ContentsReply, InstanceRecord, LocateRequest
from tessera_query.documents import SeriesDocuments
from tessera_query.index import Index

S, SERIES = study_uid(1), series_uid(1, 1)


async def expected_key(index: Index) -> str:
    contents = await index.contents(LocateRequest(study_uid=S, series_uid=SERIES))
    digest = metadata_document_digest(RELATIVE_ROOT, contents.digest)
    return metadata_document_key(S, SERIES, digest) + ".json"


async def test_a_series_document_with_relative_bulk_data_uris(tmp_path: Path) -> None:
    async with running_archive(tmp_path, LocalBlobs(tmp_path / "objects")) as archive:
        for n in (2, 1, 3):
            assert (await archive.stow(synthetic_instance(1, 1, n))).stored
        documents = SeriesDocuments(archive.index, archive.blobs, min_instances=1)
        key = await documents.build(S, SERIES)
        assert key == await expected_key(archive.index)
        stored: list[dict[str, Any]] = orjson.loads(await archive.blobs.get(key))
        assert [d["00200013"]["Value"] for d in stored] == [[1], [2], [3]]
        assert stored[0]["7FE00010"]["BulkDataURI"].startswith(f"studies/{S}/series/{SERIES}/")
        assert await documents.build(S, SERIES) is None, "already stored under its digest"

        assert (await archive.stow(synthetic_instance(1, 1, 4))).stored
        newer = await documents.build(S, SERIES)
        assert newer is not None and newer != key
        assert len(orjson.loads(await archive.blobs.get(newer))) == 4


async def test_builds_wait_until_a_series_is_quiet(tmp_path: Path) -> None:
    async with running_archive(tmp_path, LocalBlobs(tmp_path / "objects")) as archive:
        assert (await archive.stow(synthetic_instance(1, 1, 1))).stored
        record = _record(S, SERIES)
        documents = SeriesDocuments(
            archive.index,
            archive.blobs,
            quiet_seconds=0.3,
            longest_wait_seconds=60,
            min_instances=1,
        )
        worker = asyncio.create_task(documents.run())
        try:
            for _ in range(4):  # changes every 0.1 s keep it from being built
                documents.changed([record])
                await asyncio.sleep(0.1)
            assert documents.built == 0
            await asyncio.sleep(0.5)
            assert documents.built == 1
            assert await archive.blobs.head(await expected_key(archive.index)) is not None
        finally:
            worker.cancel()


async def test_a_series_that_keeps_changing_is_built_all_the_same(tmp_path: Path) -> None:
    async with running_archive(tmp_path, LocalBlobs(tmp_path / "objects")) as archive:
        assert (await archive.stow(synthetic_instance(1, 1, 1))).stored
        documents = SeriesDocuments(
            archive.index,
            archive.blobs,
            quiet_seconds=0.3,
            longest_wait_seconds=0.5,
            min_instances=1,
        )
        worker = asyncio.create_task(documents.run())
        try:
            for _ in range(10):
                documents.changed([_record(S, SERIES)])
                await asyncio.sleep(0.1)
            assert documents.built == 1
        finally:
            worker.cancel()


class ChangingIndex:
    """An index whose series gains an instance while its pages are read."""

    def __init__(self, index: Index) -> None:
        self._index = index
        self._calls = 0

    async def contents(self, request: LocateRequest) -> ContentsReply:
        reply = await self._index.contents(request)
        self._calls += 1
        if self._calls > 1:
            return reply.model_copy(update={"count": reply.count + 1, "digest": "changed"})
        return reply

    def __getattr__(self, name: str) -> Any:
        return getattr(self._index, name)


async def test_a_series_that_changed_while_read_is_not_stored(tmp_path: Path) -> None:
    async with running_archive(tmp_path, LocalBlobs(tmp_path / "objects")) as archive:
        assert (await archive.stow(synthetic_instance(1, 1, 1))).stored
        changing: Any = ChangingIndex(archive.index)
        assert (
            await SeriesDocuments(changing, archive.blobs, min_instances=1).build(S, SERIES) is None
        )
        assert [info async for info in archive.blobs.list("cache/")] == []


def _record(study: str, series: str) -> InstanceRecord:
    return InstanceRecord.model_construct(study_uid=study, series_uid=series)


async def test_small_series_are_left_to_the_gateway(tmp_path: Path) -> None:
    async with running_archive(tmp_path, LocalBlobs(tmp_path / "objects")) as archive:
        for n in (1, 2):
            assert (await archive.stow(synthetic_instance(1, 1, n))).stored
        documents = SeriesDocuments(archive.index, archive.blobs, min_instances=3)
        assert await documents.build(S, SERIES) is None
        assert (await archive.stow(synthetic_instance(1, 1, 3))).stored
        assert await documents.build(S, SERIES) == await expected_key(archive.index)
