"""The QIDO reference table (tests/support/qido_reference.py) on both index backends:
SQLite for real, MongoDB with ``MongoIndex``'s filters executed by mongomock. Both must also
return identical result datasets, in the same order, page by page."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.support.async_mongomock import AsyncDatabase
from tests.support.qido_corpus import corpus
from tests.support.qido_reference import CASES, QueryCase, found_names

from tessera_common.messages import LocateRequest, QueryLevel, contents_digest
from tessera_common.qido import parse_search
from tessera_query.index import Index, ThreadedIndex
from tessera_query.mongo_index import MongoIndex
from tessera_query.sqlite_index import SqliteIndex

BACKENDS = ("sqlite", "mongomock")


async def filled(backend: str, directory: Path) -> Index:
    """An index of ``backend`` holding the whole corpus."""
    index: Index
    if backend == "sqlite":
        index = ThreadedIndex(SqliteIndex(directory / "reference.sqlite"))
    else:
        mongo = MongoIndex(AsyncDatabase())
        await mongo.ensure_indexes()
        index = mongo
    # Half one by one, half in batches (``upsert_many``, as STOW indexes): same index.
    instances = corpus().instances
    half = len(instances) // 2
    for record, metadata in instances[:half]:
        await index.upsert(record, metadata)
    for start in range(half, len(instances), 7):
        await index.upsert_many(instances[start : start + 7])
    return index


@pytest.fixture(scope="module")
async def indexes(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[dict[str, Index]]:
    built = {name: await filled(name, tmp_path_factory.mktemp(name)) for name in BACKENDS}
    yield built
    for index in built.values():
        await index.close()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
async def test_reference(indexes: dict[str, Index], backend: str, case: QueryCase) -> None:
    reply = await indexes[backend].search(case.request(corpus()))
    assert found_names(corpus(), case.level, reply) == case.expected_names(corpus())
    assert reply.next_offset is None and not reply.more_available


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
async def test_backends_agree(indexes: dict[str, Index], case: QueryCase) -> None:
    """Same datasets, same order, with the level's attributes and with includefield=all."""
    for extra in ([], [("includefield", "all")]):
        request = case.request(corpus())
        if extra:
            request = request.model_copy(update={"include_all": True})
        sqlite = await indexes["sqlite"].search(request)
        mongo = await indexes["mongomock"].search(request)
        assert sqlite.results == mongo.results


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("level", "limit", "offset", "count", "more"),
    [
        (QueryLevel.STUDY, 5, 0, 5, True),
        (QueryLevel.STUDY, 5, 20, 3, False),
        (QueryLevel.STUDY, 0, 0, 0, True),
        (QueryLevel.SERIES, 10, 25, 3, False),
        (QueryLevel.INSTANCE, 28, 0, 28, True),
        (QueryLevel.INSTANCE, 30, 100, 0, False),
    ],
    ids=str,
)
async def test_limit_offset(
    indexes: dict[str, Index],
    backend: str,
    level: QueryLevel,
    limit: int,
    offset: int,
    count: int,
    more: bool,
) -> None:
    index = indexes[backend]
    everything = await index.search(parse_search(level, [("limit", "1000")]))
    page = await index.search(parse_search(level, [("limit", str(limit)), ("offset", str(offset))]))
    assert len(page.results) == count
    assert page.more_available is more
    assert page.results == everything.results[offset : offset + limit]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_study_order_is_newest_first(indexes: dict[str, Index], backend: str) -> None:
    reply = await indexes[backend].search(parse_search(QueryLevel.STUDY, []))
    dates = [r.get("00080020", {}).get("Value", [None])[0] for r in reply.results]
    known = [d for d in dates if d]
    assert known == sorted(known, reverse=True)
    assert dates[: len(known)] == known  # studies without a date come last


@pytest.mark.parametrize("backend", BACKENDS)
async def test_computed_attributes(indexes: dict[str, Index], backend: str) -> None:
    reply = await indexes[backend].search(
        parse_search(
            QueryLevel.STUDY,
            [
                ("PatientID", "PID-1"),
                ("includefield", "NumberOfPatientRelatedStudies"),
                ("includefield", "00201202,NumberOfPatientRelatedInstances"),
            ],
        )
    )
    by_id = {r["00200010"]["Value"][0]: r for r in reply.results}
    doe = by_id["S1"]
    assert doe["00080061"]["Value"] == ["CT", "SR"]
    assert doe["00201206"]["Value"] == [2]
    assert doe["00201208"]["Value"] == [3]
    assert len(doe["00080062"]["Value"]) == 2
    for result in reply.results:
        assert result["00201200"]["Value"] == [2]  # doe and jane share PID-1
        assert result["00201202"]["Value"] == [3]
        assert result["00201204"]["Value"] == [4]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_delete(backend: str, tmp_path: Path) -> None:
    """Instances go, then the series and studies they leave empty; computed attributes follow;
    both backends keep agreeing; UIDs not indexed are ignored."""
    (tmp_path / "other").mkdir()
    other_backend = "mongomock" if backend == "sqlite" else "sqlite"
    index, other = await filled(backend, tmp_path), await filled(other_backend, tmp_path / "other")
    doe = corpus().uid(QueryLevel.STUDY, "doe")
    study = parse_search(QueryLevel.STUDY, [("StudyInstanceUID", doe), ("includefield", "all")])
    located = await index.locate(LocateRequest(study_uid=doe))
    by_series: dict[str, list[str]] = {}
    for instance in located.instances:
        by_series.setdefault(instance.series_uid, []).append(instance.sop_uid)
    big, small = sorted(by_series.values(), key=len, reverse=True)
    for sop_uids, instances_left, series_left in [
        ([big[0], "1.2.3.999"], 2, 2),
        (big[1:], 1, 1),
        (small, 0, 0),
    ]:
        removed = await index.delete(sop_uids)
        assert sorted(i.sop_uid for i in removed) == sorted(u for u in sop_uids if u != "1.2.3.999")
        await other.delete(sop_uids)
        reply = await index.search(study)
        assert reply.results == (await other.search(study)).results
        if instances_left:
            assert reply.results[0]["00201208"]["Value"] == [instances_left]
            assert reply.results[0]["00201206"]["Value"] == [series_left]
            assert len(reply.results[0]["00080061"]["Value"]) == series_left
        else:
            assert reply.results == []
            assert (await index.locate(LocateRequest(study_uid=doe))).instances == []
    assert await index.delete(big) == []
    everything = parse_search(QueryLevel.INSTANCE, [("limit", "1000")])
    assert len((await index.search(everything)).results) == len(corpus().instances) - 3
    await index.close()
    await other.close()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_upsert_many_applies_in_order(backend: str, tmp_path: Path) -> None:
    """A batch that stores an instance, then the same SOP Instance moved to another study:
    the second reply names the first one's objects, and only the moved one is found."""
    (record, metadata), (other, _) = (
        corpus().instances[0],
        next(
            item
            for item in corpus().instances
            if item[0].study_uid != corpus().instances[0][0].study_uid
        ),
    )
    moved = record.model_copy(
        update={
            "study_uid": other.study_uid,
            "series_uid": other.series_uid,
            "object_key": other.object_key + ".moved",
            "sidecar_key": other.sidecar_key + ".moved",
        }
    )
    index: Index
    if backend == "sqlite":
        index = ThreadedIndex(SqliteIndex(tmp_path / "batch.sqlite"))
    else:
        index = MongoIndex(AsyncDatabase())
    try:
        replies = await index.upsert_many([(record, metadata), (moved, metadata)])
        assert [r.replaced for r in replies] == [False, True]
        assert replies[1].previous_object_key == record.object_key
        assert replies[1].previous_sidecar_key == record.sidecar_key
        located = await index.locate(
            LocateRequest(study_uid=other.study_uid, sop_uid=record.sop_uid)
        )
        assert [i.object_key for i in located.instances] == [moved.object_key]
        gone = await index.locate(LocateRequest(study_uid=record.study_uid))
        assert gone.instances == []
    finally:
        await index.close()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_contents_digest_is_the_located_instances(
    indexes: dict[str, Index], backend: str
) -> None:
    """``contents`` counts and digests exactly what ``locate`` lists, in its order, at study,
    series and instance level; a UID that names nothing has count 0."""
    index = indexes[backend]
    doe = corpus().uid(QueryLevel.STUDY, "doe")
    located = (await index.locate(LocateRequest(study_uid=doe))).instances
    first = located[0]
    for request, expected in [
        (LocateRequest(study_uid=doe), located),
        (
            LocateRequest(study_uid=doe, series_uid=first.series_uid),
            [i for i in located if i.series_uid == first.series_uid],
        ),
        (
            LocateRequest(study_uid=doe, series_uid=first.series_uid, sop_uid=first.sop_uid),
            [first],
        ),
    ]:
        contents = await index.contents(request)
        assert contents.count == len(expected)
        assert contents.digest == contents_digest((i.sop_uid, i.sha256) for i in expected)
    assert (await index.contents(LocateRequest(study_uid="1.2.3.999"))).count == 0
    assert await indexes["sqlite"].contents(LocateRequest(study_uid=doe)) == await indexes[
        "mongomock"
    ].contents(LocateRequest(study_uid=doe))
