"""DELETE of an instance, a series and a study through the gateway, on real services: NATS,
the query service on SQLite, the store's ingest and delete handlers, local object storage.

Two studies are stored by STOW-RS (study 1 with two series of three instances), then deleted
piece by piece; after each step QIDO-RS, WADO-RS, object storage, the index and the event
stream must agree."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from nats.aio.msg import Msg
from tests.support.archive import (
    Archive,
    running_archive,
    series_uid,
    sop_uid,
    study_uid,
    synthetic_instance,
)
from tests.support.http import multipart_body

from tessera_common.blobstore import open_blob_store
from tessera_common.messages import (
    DeleteRequest,
    IngestBatchRequest,
    IngestRequest,
    InstanceDeletedEvent,
    InstanceStoredEvent,
    LocateRequest,
    Subject,
)
from tessera_common.settings import Settings
from tessera_gateway.app import build_app
from tessera_query.service import QueryService
from tessera_store.delete import Deleter
from tessera_store.locks import ProcessLocks

Client = TestClient[web.Request, web.Application]
STUDY_1 = f"/dicom-web/studies/{study_uid(1)}"
SERIES_1 = f"{STUDY_1}/series/{series_uid(1, 1)}"
SERIES_2 = f"{STUDY_1}/series/{series_uid(1, 2)}"
INSTANCE_1_1_1 = f"{SERIES_1}/instances/{sop_uid(1, 1, 1)}"


@dataclass
class Deployment:
    archive: Archive
    client: Client
    deleted: list[InstanceDeletedEvent]

    async def keys(self) -> set[str]:
        return {info.key async for info in self.archive.blobs.list("studies/")}

    async def count(self, path: str) -> int:
        response = await self.client.get(path, params={"limit": "1000"})
        if response.status == 204:
            return 0
        assert response.status == 200, await response.text()
        return len(await response.json())


@pytest.fixture
async def deployment(tmp_path: Path) -> AsyncIterator[Deployment]:
    settings = Settings(data_dir=tmp_path, blob_root=tmp_path / "objects")
    blobs = open_blob_store(settings)
    async with running_archive(tmp_path, blobs, settings=settings) as archive:
        bus = archive.bus
        deleter = Deleter(blobs, bus, ProcessLocks())
        await bus.serve(Subject.STORE_INGEST, IngestRequest, archive.ingestor.ingest, queue="store")
        await bus.serve(
            Subject.STORE_INGEST_BATCH,
            IngestBatchRequest,
            archive.ingestor.ingest_batch,
            queue="store",
        )
        await bus.serve(Subject.STORE_DELETE, DeleteRequest, deleter.delete, queue="store")
        deleted: list[InstanceDeletedEvent] = []

        async def on_deleted(msg: Msg) -> None:
            deleted.append(InstanceDeletedEvent.model_validate_json(msg.data))

        await bus.client.subscribe(Subject.EVENT_INSTANCE_DELETED, cb=on_deleted)
        client = TestClient(TestServer(build_app(archive.settings), host="127.0.0.1"))
        await client.start_server()
        try:
            yield Deployment(archive, client, deleted)
        finally:
            await client.close()


async def _stow(client: Client) -> None:
    parts = [
        synthetic_instance(study, series, n)
        for study, series, n in [(1, 1, 1), (1, 1, 2), (1, 1, 3), (1, 2, 1), (1, 2, 2), (2, 1, 1)]
    ]
    body, content_type = multipart_body(parts)
    response = await client.post(
        "/dicom-web/studies",
        data=body,
        headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
    )
    assert response.status == 200, await response.text()


async def test_delete_instance_series_study(deployment: Deployment) -> None:
    client, blobs = deployment.client, deployment.archive.blobs
    await _stow(client)
    assert len(await deployment.keys()) == 12  # six instances, object + sidecar each
    # A metadata document cached for study 1 must not outlive its instances.
    assert (await client.get(f"{STUDY_1}/metadata")).status == 200
    for _ in range(100):  # the gateway caches the document in the background
        if [info async for info in blobs.list(f"cache/metadata/{study_uid(1)}/")]:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the study's metadata document was not cached")

    response = await client.delete(INSTANCE_1_1_1)
    assert response.status == 204, await response.text()
    assert (await client.get(INSTANCE_1_1_1)).status == 404
    assert (await client.get(f"{INSTANCE_1_1_1}/metadata")).status == 404
    assert await deployment.count(f"{SERIES_1}/instances") == 2
    assert not any(sop_uid(1, 1, 1) in key for key in await deployment.keys())
    assert [info async for info in blobs.list(f"cache/metadata/{study_uid(1)}/")] == []
    study = await (await client.get("/dicom-web/studies", params={"includefield": "all"})).json()
    counts = {s["0020000D"]["Value"][0]: s["00201208"]["Value"][0] for s in study}
    assert counts == {study_uid(1): 4, study_uid(2): 1}

    assert (await client.delete(SERIES_1)).status == 204
    assert (await client.get(SERIES_1)).status == 404
    assert await deployment.count(f"{STUDY_1}/series") == 1
    assert await deployment.count(f"{STUDY_1}/instances") == 2
    assert len(await deployment.keys()) == 6

    assert (await client.delete(STUDY_1)).status == 204
    assert (await client.get(STUDY_1)).status == 404
    assert (await client.get(f"{SERIES_2}/metadata")).status == 404
    assert await deployment.count("/dicom-web/studies") == 1
    assert await deployment.keys() == {
        f"studies/{study_uid(2)}/series/{series_uid(2, 1)}/instances/{sop_uid(2, 1, 1)}.{ext}"
        for ext in ("dcm", "json")
    }

    assert sorted(event.sop_uid for event in deployment.deleted) == sorted(
        sop_uid(1, series, n) for series, n in [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2)]
    )
    assert {event.study_uid for event in deployment.deleted} == {study_uid(1)}

    # Study 2 is untouched and still retrievable.
    assert (await client.get(f"/dicom-web/studies/{study_uid(2)}/metadata")).status == 200


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/dicom-web/studies/1.2.3.4.5", 404),
        (f"{STUDY_1}/series/1.2.3", 404),
        (f"{SERIES_1}/instances/1.2.3", 404),
        ("/dicom-web/studies/1.2.x", 400),
        ("/dicom-web/studies/1..2", 400),
        (f"{STUDY_1}/series/{'1' * 65}", 400),
        (f"{SERIES_1}/instances/..%2F..%2Fetc", 400),
    ],
    ids=[
        "unknown-study",
        "unknown-series",
        "unknown-instance",
        "letters",
        "empty-component",
        "too-long",
        "traversal",
    ],
)
async def test_delete_errors(deployment: Deployment, path: str, status: int) -> None:
    await _stow(deployment.client)
    response = await deployment.client.delete(path)
    assert response.status == status, await response.text()
    assert len(await deployment.keys()) == 12
    assert deployment.deleted == []


async def test_delete_twice_is_404(deployment: Deployment) -> None:
    await _stow(deployment.client)
    assert (await deployment.client.delete(SERIES_2)).status == 204
    assert (await deployment.client.delete(SERIES_2)).status == 404
    body = orjson.loads(await (await deployment.client.get(f"{STUDY_1}/series")).read())
    assert [s["0020000E"]["Value"][0] for s in body] == [series_uid(1, 1)]


async def test_old_stored_event_does_not_bring_it_back(deployment: Deployment) -> None:
    """The query service's catch-up replays ``stored`` events; a deleted instance's sidecar is
    gone, so its event indexes nothing."""
    await _stow(deployment.client)
    archive = deployment.archive
    located = await archive.index.locate(LocateRequest(study_uid=study_uid(1)))
    first = located.instances[0]
    assert (await deployment.client.delete(STUDY_1)).status == 204
    event = InstanceStoredEvent(
        study_uid=first.study_uid,
        series_uid=first.series_uid,
        sop_uid=first.sop_uid,
        sop_class_uid=first.sop_class_uid,
        sidecar_key=first.sidecar_key,
        sha256=first.sha256,
        stored_at="2024-01-01T00:00:00+00:00",
    )
    await QueryService(archive.index, archive.blobs).on_event(event)
    assert (await archive.index.locate(LocateRequest(study_uid=study_uid(1)))).instances == []
