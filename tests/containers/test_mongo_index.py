"""The QIDO reference table against a real MongoDB (testcontainers), through pymongo's
``AsyncMongoClient``: the same rows the SQLite and mongomock runs check.

Skipped where no Docker engine answers — as on our CI machines, where the MongoDB query path
is proven by tests/component/test_query_reference.py executing the same filters in mongomock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from tests.support.qido_corpus import corpus
from tests.support.qido_reference import CASES, QueryCase, found_names

from tessera_common.messages import LocateRequest, MetadataRequest, QueryLevel
from tessera_common.qido import parse_search
from tessera_query.mongo_index import MongoIndex

pytestmark = pytest.mark.containers

MONGO_IMAGE = "mongo:7.0"


def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
    except Exception:
        return False
    return True


@pytest.fixture(scope="module")
def mongo_uri() -> Iterator[str]:
    if not _docker_answers():
        pytest.skip("no Docker engine answers; MongoDB runs in-process via mongomock instead")
    from testcontainers.mongodb import MongoDbContainer

    with MongoDbContainer(MONGO_IMAGE) as container:
        yield container.get_connection_url()


@pytest.fixture(scope="module")
async def index(mongo_uri: str) -> AsyncIterator[MongoIndex]:
    mongo = MongoIndex.connect(mongo_uri, "tessera_test")
    await mongo.ensure_indexes()
    for record, metadata in corpus().instances:
        await mongo.upsert(record, metadata)
    yield mongo
    await mongo.close()


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
async def test_reference(index: MongoIndex, case: QueryCase) -> None:
    reply = await index.search(case.request(corpus()))
    assert found_names(corpus(), case.level, reply) == case.expected_names(corpus())


async def test_retrieve_side(index: MongoIndex) -> None:
    record, _ = corpus().instances[0]
    assert await index.contains(record.sop_uid, record.sha256)
    located = await index.locate(LocateRequest(study_uid=record.study_uid))
    assert record.sop_uid in {i.sop_uid for i in located.instances}
    page = await index.metadata_page(MetadataRequest(study_uid=record.study_uid))
    assert page.documents
    assert await index.ping()


async def test_reindexing_is_idempotent(index: MongoIndex) -> None:
    before: list[Any] = [
        await index.search(parse_search(level, [("includefield", "all")])) for level in QueryLevel
    ]
    for record, metadata in corpus().instances[:5]:
        assert (await index.upsert(record, metadata)).replaced
    after = [
        await index.search(parse_search(level, [("includefield", "all")])) for level in QueryLevel
    ]
    assert after == before
