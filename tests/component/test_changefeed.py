"""The change feed and its webhooks on real services: NATS (JetStream), the query service on
SQLite, the store's ingest and delete handlers, local object storage, the gateway's app.

Instances are stored, one is stored again with other bytes and one is deleted; the feed must
list every change in stream order with the right action and state, page by offset and limit,
window by time, and answer bad parameters with 400. Webhooks are received by a local aiohttp
server that refuses the first attempt."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from tests.support.archive import (
    Archive,
    running_archive,
    series_uid,
    sop_uid,
    study_uid,
    synthetic_instance,
)

from tessera_common.blobstore import open_blob_store
from tessera_common.messages import DeleteRequest, Subject
from tessera_common.settings import Settings
from tessera_gateway.app import build_app
from tessera_gateway.changefeed_log import EventLog
from tessera_gateway.changefeed_model import (
    MAX_LIMIT,
    Action,
    ChangeEvent,
    ChangeFeedQuery,
    ChangeFeedQueryError,
    State,
    entry_state,
    parse_latest_query,
    parse_query,
)
from tessera_gateway.webhooks import (
    RetryPolicy,
    WebhookConfigError,
    WebhookTarget,
    signature,
    webhook_targets,
)
from tessera_store.delete import Deleter
from tessera_store.locks import ProcessLocks

Client = TestClient[web.Request, web.Application]
FEED = "/dicom-web/changefeed"
SECRET = "s3cret-for-tests"

# --- parsing: one table of good and one of bad query strings -----------------------------------

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

GOOD_QUERIES = [
    pytest.param([], ChangeFeedQuery(), id="defaults"),
    pytest.param(
        [("startTime", "2026-01-02T03:04:05Z"), ("endTime", "2026-01-02T04:04:06+01:00")],
        ChangeFeedQuery(start_time=T0, end_time=T0 + timedelta(seconds=1)),
        id="window-with-zones",
    ),
    pytest.param(
        [("offset", "42"), ("limit", "7")], ChangeFeedQuery(offset=42, limit=7), id="page"
    ),
    pytest.param([("limit", str(MAX_LIMIT))], ChangeFeedQuery(limit=MAX_LIMIT), id="max-limit"),
    pytest.param(
        [("includemetadata", "FALSE")], ChangeFeedQuery(include_metadata=False), id="names-any-case"
    ),
    pytest.param(
        [("STARTTIME", "2026-01-02T03:04:05.000000+00:00")],
        ChangeFeedQuery(start_time=T0),
        id="fraction-and-offset-zone",
    ),
]

BAD_QUERIES = [
    pytest.param([("startTime", "2026-01-02T03:04:05")], "no time zone", id="naive-time"),
    pytest.param([("startTime", "yesterday")], "not an ISO 8601", id="not-a-time"),
    pytest.param(
        [("startTime", "2026-01-02T03:00:00Z"), ("endTime", "2026-01-02T03:00:00Z")],
        "later than startTime",
        id="empty-window",
    ),
    pytest.param([("offset", "-1")], "non-negative integer", id="negative-offset"),
    pytest.param([("offset", "1e3")], "non-negative integer", id="float-offset"),
    pytest.param([("limit", "0")], "out of range", id="zero-limit"),
    pytest.param([("limit", str(MAX_LIMIT + 1))], "out of range", id="limit-too-large"),
    pytest.param([("includeMetadata", "yes")], "neither true nor false", id="bad-bool"),
    pytest.param([("limit", "1"), ("limit", "2")], "more than once", id="repeated"),
    pytest.param([("since", "1")], "unknown query parameter", id="unknown"),
]


@pytest.mark.parametrize(("params", "expected"), GOOD_QUERIES)
def test_query_is_parsed(params: list[tuple[str, str]], expected: ChangeFeedQuery) -> None:
    assert parse_query(params) == expected


@pytest.mark.parametrize(("params", "reason"), BAD_QUERIES)
def test_bad_query_is_refused_with_a_reason(params: list[tuple[str, str]], reason: str) -> None:
    with pytest.raises(ChangeFeedQueryError, match=reason):
        parse_query(params)


def test_latest_takes_only_include_metadata() -> None:
    assert parse_latest_query([]) is True
    assert parse_latest_query([("includeMetadata", "false")]) is False
    with pytest.raises(ChangeFeedQueryError):
        parse_latest_query([("limit", "1")])


def _event(action: Action, sha256: str = "a" * 64) -> ChangeEvent:
    return ChangeEvent(1, T0, action, "1.2", "1.2.3", "1.2.3.4", sha256, "key.json")


STATES = [
    pytest.param(Action.CREATE, "a" * 64, State.CURRENT, id="create-still-stored"),
    pytest.param(Action.CREATE, "b" * 64, State.REPLACED, id="create-other-bytes-now"),
    pytest.param(Action.CREATE, None, State.DELETED, id="create-nothing-stored"),
    pytest.param(Action.DELETE, None, State.DELETED, id="delete"),
    pytest.param(Action.DELETE, "a" * 64, State.DELETED, id="delete-restored-since"),
]


@pytest.mark.parametrize(("action", "stored", "state"), STATES)
def test_entry_state(action: Action, stored: str | None, state: State) -> None:
    assert entry_state(_event(action), stored) is state


BAD_WEBHOOK_URLS = [
    pytest.param("ftp://example.org/hook", id="ftp"),
    pytest.param("file:///etc/passwd", id="file"),
    pytest.param("/relative/hook", id="relative"),
    pytest.param("https://user:pw@example.org/hook", id="credentials"),
    pytest.param("http://example.org:99999/hook", id="bad-port"),
]


@pytest.mark.parametrize("url", BAD_WEBHOOK_URLS)
def test_only_plain_http_urls_are_webhooks(url: str) -> None:
    with pytest.raises(WebhookConfigError):
        webhook_targets([url])


def test_webhook_target_names() -> None:
    targets = webhook_targets(["https://hooks.example.org:8443/a?token=x"] * 2)
    assert targets == [WebhookTarget("https://hooks.example.org:8443/a?token=x")]
    assert targets[0].label == "https://hooks.example.org:8443"  # no path, no token
    assert targets[0].consumer.startswith("webhook-") and "." not in targets[0].consumer


def test_signature_is_hmac_sha256_of_timestamp_and_body() -> None:
    expected = hmac.new(b"key", b"1700000000.{}", hashlib.sha256).hexdigest()
    assert signature("key", "1700000000", b"{}") == f"sha256={expected}"


def test_backoff_doubles_up_to_its_cap() -> None:
    policy = RetryPolicy(backoff=2.0, backoff_max=10.0)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 5)] == [2.0, 4.0, 8.0, 10.0, 10.0]


# --- the feed on real services -------------------------------------------------------------------


@dataclass
class Deployment:
    archive: Archive
    client: Client

    async def feed(self, **params: str) -> list[dict[str, Any]]:
        response = await self.client.get(FEED, params=params)
        assert response.status == 200, await response.text()
        assert response.content_type == "application/json"
        entries: list[dict[str, Any]] = await response.json()
        return entries


async def _serve_store(archive: Archive) -> None:
    """The handlers DELETE needs beyond those ``running_archive`` serves."""
    bus, blobs = archive.bus, archive.blobs
    deleter = Deleter(blobs, bus, ProcessLocks())
    await bus.serve(Subject.STORE_DELETE, DeleteRequest, deleter.delete, queue="store")


@pytest.fixture
async def deployment(tmp_path: Path) -> AsyncIterator[Deployment]:
    settings = Settings(data_dir=tmp_path, blob_root=tmp_path / "objects")
    async with running_archive(tmp_path, open_blob_store(settings), settings=settings) as archive:
        await _serve_store(archive)
        client = TestClient(TestServer(build_app(archive.settings), host="127.0.0.1"))
        await client.start_server()
        try:
            yield Deployment(archive, client)
        finally:
            await client.close()


INSTANCE_1 = (
    f"/dicom-web/studies/{study_uid(1)}/series/{series_uid(1, 1)}/instances/{sop_uid(1, 1, 1)}"
)


async def _changes(deployment: Deployment) -> datetime:
    """Store three instances, store the first again with other bytes, delete the third.
    Returns a time before the first change."""
    archive = deployment.archive
    before = datetime.now(UTC)
    for n in (1, 2, 3):
        assert (await archive.stow(synthetic_instance(1, 1, n))).stored
    assert (await archive.stow(synthetic_instance(1, 1, 1, comment="second version"))).stored
    third = INSTANCE_1.replace(sop_uid(1, 1, 1), sop_uid(1, 1, 3))
    response = await deployment.client.delete(third)
    assert response.status == 204, await response.text()
    return before


async def test_empty_feed(deployment: Deployment) -> None:
    assert await deployment.feed() == []
    assert (await deployment.client.get(FEED + "/latest")).status == 204


async def test_feed_lists_every_change_in_order(deployment: Deployment) -> None:
    await _changes(deployment)
    entries = await deployment.feed(includeMetadata="false")
    summary = [(e["Sequence"], e["SopInstanceUid"], e["Action"], e["State"]) for e in entries]
    assert summary == [
        (1, sop_uid(1, 1, 1), "create", "replaced"),
        (2, sop_uid(1, 1, 2), "create", "current"),
        (3, sop_uid(1, 1, 3), "create", "deleted"),
        (4, sop_uid(1, 1, 1), "create", "current"),
        (5, sop_uid(1, 1, 3), "delete", "deleted"),
    ]
    assert all("Metadata" not in e for e in entries)
    first = entries[0]
    assert first["StudyInstanceUid"] == study_uid(1)
    assert first["SeriesInstanceUid"] == series_uid(1, 1)
    stamps = [datetime.fromisoformat(e["Timestamp"]) for e in entries]
    assert stamps == sorted(stamps) and all(s.tzinfo is not None for s in stamps)


async def test_metadata_only_for_the_current_version(deployment: Deployment) -> None:
    await _changes(deployment)
    entries = await deployment.feed()
    by_sequence = {e["Sequence"]: e for e in entries}
    assert by_sequence[1]["Metadata"] is None  # replaced
    assert by_sequence[5]["Metadata"] is None  # deleted
    current = by_sequence[4]["Metadata"]
    assert current["00080018"]["Value"] == [sop_uid(1, 1, 1)]
    assert current["00204000"]["Value"] == ["second version"]
    bulk = current["7FE00010"]["BulkDataURI"]
    assert bulk.startswith(str(deployment.client.make_url("/dicom-web/studies/")))


async def test_offset_and_limit_page_through_the_feed(deployment: Deployment) -> None:
    await _changes(deployment)
    seen: list[int] = []
    offset = 0
    while page := await deployment.feed(offset=str(offset), limit="2", includeMetadata="false"):
        assert len(page) <= 2
        seen.extend(e["Sequence"] for e in page)
        offset = page[-1]["Sequence"]
    assert seen == [1, 2, 3, 4, 5]
    response = await deployment.client.get(FEED, params={"offset": "3"})
    assert response.headers["Tessera-Changefeed-First-Sequence"] == "1"
    assert response.headers["Tessera-Changefeed-Last-Sequence"] == "5"
    assert [e["Sequence"] for e in await response.json()] == [4, 5]


async def test_time_window(deployment: Deployment) -> None:
    before = await _changes(deployment)
    entries = await deployment.feed(includeMetadata="false")
    stamps = [datetime.fromisoformat(e["Timestamp"]) for e in entries]
    # From the third entry's timestamp (inclusive) to the fifth's (exclusive).
    window = await deployment.feed(
        startTime=stamps[2].isoformat(), endTime=stamps[4].isoformat(), includeMetadata="false"
    )
    expected = [
        e["Sequence"] for e, s in zip(entries, stamps, strict=True) if stamps[2] <= s < stamps[4]
    ]
    assert [e["Sequence"] for e in window] == expected and 3 in expected and 5 not in expected
    everything = await deployment.feed(startTime=before.isoformat(), includeMetadata="false")
    assert len(everything) == 5
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert await deployment.feed(startTime=later) == []
    # A window and an offset: whichever starts later wins.
    assert [
        e["Sequence"]
        for e in await deployment.feed(
            startTime=before.isoformat(), offset="4", includeMetadata="false"
        )
    ] == [5]


async def test_latest(deployment: Deployment) -> None:
    await _changes(deployment)
    response = await deployment.client.get(FEED + "/latest")
    assert response.status == 200
    latest = await response.json()
    assert latest["Sequence"] == 5 and latest["Action"] == "delete"
    assert latest["Metadata"] is None
    plain = await (await deployment.client.get(FEED + "/latest?includeMetadata=false")).json()
    assert "Metadata" not in plain


@pytest.mark.parametrize(
    "query",
    ["startTime=2026-01-01T00:00:00", "limit=5000", "offset=x", "includeMetadata=1", "foo=bar"],
)
async def test_bad_parameters_get_400(deployment: Deployment, query: str) -> None:
    response = await deployment.client.get(f"{FEED}?{query}")
    assert response.status == 400
    body = await response.json()
    assert body["error"] == "bad-request" and body["reason"]
    assert (await deployment.client.get(f"{FEED}/latest?limit=1")).status == 400


# --- webhooks -------------------------------------------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int


@asynccontextmanager
async def _receiver(refuse_first: bool) -> AsyncIterator[tuple[str, list[Received]]]:
    """A webhook receiver on loopback that answers 503 to the first attempt of each event."""
    received: list[Received] = []
    refused: set[str] = set()

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        sequence = request.headers["Tessera-Sequence"]
        status = 200
        if refuse_first and sequence not in refused:
            refused.add(sequence)
            status = 503
        received.append(Received(dict(request.headers), body, status))
        return web.Response(status=status)

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/hook")), received
    finally:
        await server.close()


async def _until(condition: Any, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail("timed out waiting for webhook deliveries")
        await asyncio.sleep(0.05)


async def test_webhooks_retry_sign_and_deliver_once_per_url(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, blob_root=tmp_path / "objects")
    async with (
        running_archive(tmp_path, open_blob_store(settings), settings=settings) as archive,
        _receiver(refuse_first=True) as (flaky_url, flaky),
        _receiver(refuse_first=False) as (steady_url, steady),
    ):
        configured = archive.settings.model_copy(
            update={
                "webhook_urls": [flaky_url, steady_url],
                "webhook_secret": SECRET,
                "webhook_backoff_seconds": 0.2,
            }
        )
        # Two gateway replicas share each URL's consumer.
        replicas = [TestClient(TestServer(build_app(configured), host="127.0.0.1")) for _ in "ab"]
        for replica in replicas:
            await replica.start_server()
        try:
            # The consumers exist once the gateway serves: no event is missed.
            for n in (1, 2, 3):
                assert (await archive.stow(synthetic_instance(2, 1, n))).stored
            await _until(lambda: len(steady) >= 3 and sum(r.status == 200 for r in flaky) >= 3)
            await asyncio.sleep(0.5)  # nothing more arrives
        finally:
            for replica in replicas:
                await replica.close()
    for deliveries in (flaky, steady):
        accepted = [r for r in deliveries if r.status == 200]
        sequences = sorted(int(r.headers["Tessera-Sequence"]) for r in accepted)
        assert sequences == [1, 2, 3], "each event is accepted once per URL, not per replica"
        for r in deliveries:
            timestamp = r.headers["Tessera-Timestamp"]
            assert r.headers["Tessera-Signature"] == signature(SECRET, timestamp, r.body)
            entry = json.loads(r.body)
            assert entry["Sequence"] == int(r.headers["Tessera-Sequence"])
            assert entry["Action"] == "create" and entry["State"] == "current"
            assert "Metadata" not in entry
    assert len(flaky) == 6, "every event was refused once and retried once"
    assert sorted(r.headers["Tessera-Delivery-Attempt"] for r in flaky) == ["1"] * 3 + ["2"] * 3
    assert len(steady) == 3


async def test_webhook_consumer_follows_the_retry_settings(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, blob_root=tmp_path / "objects")
    url = "http://127.0.0.1:9/never-called"
    async with running_archive(tmp_path, open_blob_store(settings), settings=settings) as archive:
        for attempts in (3, 5):
            configured = archive.settings.model_copy(
                update={"webhook_urls": [url], "webhook_max_attempts": attempts}
            )
            client = TestClient(TestServer(build_app(configured), host="127.0.0.1"))
            await client.start_server()
            await client.close()
            info = await archive.bus.jetstream.consumer_info(
                "TESSERA_EVENTS", WebhookTarget(url).consumer
            )
            assert info.config.max_deliver == attempts
            assert info.config.deliver_policy == "new"


async def test_a_page_stops_at_its_time_budget(deployment: Deployment) -> None:
    """With the budget spent after the first read, a page holds one batch; the client goes on
    from its last Sequence and misses nothing."""
    await _changes(deployment)
    event_log = EventLog(
        deployment.archive.bus.jetstream, deployment.archive.blobs, time_budget=0, read_ahead=2
    )
    bounds = await event_log.bounds()
    assert (bounds.first, bounds.last) == (1, 5)
    seen: list[int] = []
    offset = 0
    while True:
        query = ChangeFeedQuery(offset=offset, include_metadata=False)
        page = [e async for e in event_log.entries(query, bounds, service_root="")]
        if not page:
            break
        assert len(page) <= 2
        seen.extend(e["Sequence"] for e in page)
        offset = seen[-1]
    assert seen == [1, 2, 3, 4, 5]
