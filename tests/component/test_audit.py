"""The audit trail against a real nats-server: one event per access, on the audit subject and
in the durable ``TESSERA_AUDIT`` stream and the log — and never a query-string value."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tessera.apikeys import create_key
from tessera.natsd import NatsServer
from tessera_common.bus import Bus
from tessera_common.errors import ErrorCode, TesseraError
from tessera_common.messages import AUDIT_STREAM, AUDIT_SUBJECT, EVENTS_STREAM, AuditEvent
from tessera_common.settings import Settings
from tessera_gateway.audit import COUNT_HEADER, AuditTrail, audit_event, outcome_of
from tessera_gateway.auth import ANONYMOUS, setup_security
from tessera_gateway.context import BUS
from tessera_gateway.errors import error_middleware

Client = TestClient[web.Request, web.Application]
B = "/dicom-web"
STUDY, SERIES = "1.2.840.113619.2.55.3", "1.2.840.113619.2.55.3.4"
PHI = ("DOE", "JANE", "P000123", "19700101")
QIDO_QUERY = {"PatientName": "DOE^JANE", "PatientID": "P000123", "PatientBirthDate": "19700101"}


@pytest_asyncio.fixture(loop_scope="session")
async def bus(tmp_path: Path) -> AsyncIterator[Bus]:
    server = NatsServer(tmp_path / "nats")
    await server.start()
    connected = await Bus.connect(server.url, name="audit-test", request_timeout=5)
    await connected.ensure_streams()
    try:
        yield connected
    finally:
        await connected.close()
        await server.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def received(bus: Bus) -> AsyncIterator[list[bytes]]:
    payloads: list[bytes] = []

    async def collect(msg: object) -> None:
        payloads.append(msg.data)  # type: ignore[attr-defined]

    subscription = await bus.client.subscribe(AUDIT_SUBJECT, cb=collect)
    yield payloads
    await subscription.unsubscribe()


@pytest_asyncio.fixture(loop_scope="session")
async def client(bus: Bus, tmp_path: Path) -> AsyncIterator[Client]:
    settings = Settings(data_dir=tmp_path, auth_enabled=True)

    async def ok(_: web.Request) -> web.Response:
        return web.json_response([])

    async def crash(_: web.Request) -> web.Response:
        raise RuntimeError("boom")

    async def missing(_: web.Request) -> web.Response:
        raise TesseraError(ErrorCode.NOT_FOUND, "no such series")

    async def connect(app: web.Application) -> AsyncIterator[None]:
        app[BUS] = bus  # as the gateway's own resources do, before the audit trail starts
        yield

    app = web.Application(middlewares=[error_middleware])
    app.cleanup_ctx.append(connect)
    app.router.add_get("/healthz", ok)
    app.router.add_get(B + "/studies", ok)
    app.router.add_post(B + "/studies", ok)
    app.router.add_get(B + "/studies/{study}/series/{series}", missing)
    app.router.add_get(B + "/studies/{study}/series", ok)
    app.router.add_get(B + "/crash", crash)
    setup_security(app, settings)
    test_client = TestClient(TestServer(app, host="127.0.0.1"))
    await test_client.start_server()
    yield test_client
    await test_client.close()


async def events_after(received: list[bytes], count: int) -> list[AuditEvent]:
    """The events of the messages received (one JSON object per line) once there are ``count``."""
    for _ in range(200):
        if sum(len(payload.splitlines()) for payload in received) >= count:
            break
        await asyncio.sleep(0.01)
    return [
        AuditEvent.model_validate_json(line)
        for payload in received
        for line in payload.splitlines()
    ]


async def test_audit_events_on_nats_without_phi(
    client: Client,
    bus: Bus,
    received: list[bytes],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    created = create_key(Settings(data_dir=tmp_path), "viewer", ["read"])
    auth = {"Authorization": f"Bearer {created.key}"}
    caplog.set_level(logging.INFO, logger="tessera.audit")

    statuses = [
        (await client.get(B + "/studies", params=QIDO_QUERY, headers=auth)).status,
        (await client.get(f"{B}/studies/{STUDY}/series/{SERIES}", headers=auth)).status,
        (await client.get(f"{B}/studies/DOE^JANE/series", headers=auth)).status,
        (await client.get(B + "/studies", params=QIDO_QUERY)).status,
        (await client.post(B + "/studies", headers=auth)).status,
        (await client.get("/healthz")).status,
    ]
    assert statuses == [200, 404, 200, 401, 403, 200]
    events = await events_after(received, 5)
    assert len(events) == 5, "one event per access; probes are not audited"

    qido, series, bad_uid, anonymous, stow = events
    who = f"apikey:{created.record.key_id}"
    assert (qido.subject, qido.auth_method, qido.action) == (who, "api-key", "read")
    assert (qido.method, qido.route, qido.status, qido.outcome) == (
        "GET",
        B + "/studies",
        200,
        "success",
    )
    assert qido.duration_ms >= 0 and qido.source_address == "127.0.0.1"
    assert (series.study_uid, series.series_uid, series.sop_uid) == (STUDY, SERIES, None)
    assert (series.route, series.outcome) == (
        B + "/studies/{study}/series/{series}",
        "client-error",
    )
    assert bad_uid.study_uid is None, "a path segment that is no UID is never recorded"
    assert (anonymous.subject, anonymous.status, anonymous.outcome) == (
        "unauthenticated",
        401,
        "denied",
    )
    assert (stow.method, stow.route, stow.action, stow.outcome) == (
        "POST",
        B + "/studies",
        "write",
        "denied",
    )

    logged = [r.getMessage() for r in caplog.records if r.name == "tessera.audit"]
    assert len(logged) == 5 and all(line.startswith("audit {") for line in logged)
    for text in [*(p.decode() for p in received), *logged]:
        for value in PHI:
            assert value not in text, f"{value!r} leaked into an audit record"
        assert "Bearer" not in text and created.key not in text

    stored = await bus.jetstream.stream_info(AUDIT_STREAM)
    assert stored.state.messages == len(received), (
        "audit events are kept durably in their own stream"
    )
    events_stream = await bus.jetstream.stream_info(EVENTS_STREAM)
    assert events_stream.state.messages == 0, "and never in the instance-event stream"


async def test_server_errors_are_audited(
    client: Client, received: list[bytes], tmp_path: Path
) -> None:
    key = create_key(Settings(data_dir=tmp_path), "ops", ["read"]).key
    response = await client.get(B + "/crash", headers={"Authorization": f"Bearer {key}"})
    assert response.status == 500
    (event,) = await events_after(received, 1)
    assert (event.status, event.outcome, event.action) == (500, "server-error", "read")


OUTCOMES = [(200, "success"), (206, "success"), (304, "success"), (400, "client-error"),
            (401, "denied"), (403, "denied"), (404, "client-error"), (499, "cancelled"),
            (503, "server-error")]  # fmt: skip


@pytest.mark.parametrize(("status", "outcome"), OUTCOMES, ids=[str(s) for s, _ in OUTCOMES])
def test_outcome_of(status: int, outcome: str) -> None:
    assert outcome_of(status) == outcome


def test_event_keeps_only_valid_uids() -> None:
    event = audit_event(
        principal=ANONYMOUS,
        action=None,
        method="GET",
        route=None,
        path_params={"study": "1.2.3", "series": "../../etc", "instance": "DOE^JANE", "x": "y"},
        status=404,
        duration=0.0012,
        source_address=None,
    )
    assert (event.route, event.study_uid, event.series_uid, event.sop_uid) == (
        "unmatched",
        "1.2.3",
        None,
        None,
    )
    assert event.duration_ms == 1.2
    assert "DOE" not in orjson.dumps(event.model_dump()).decode()


async def test_events_queued_together_travel_in_one_message(bus: Bus) -> None:
    """Events queued while a publisher is busy go out together, one JSON object per line,
    their number in a header; each is acknowledged by the audit stream."""
    messages: list[tuple[bytes, dict[str, str]]] = []

    async def collect(msg: object) -> None:
        messages.append((msg.data, msg.headers or {}))  # type: ignore[attr-defined]

    subscription = await bus.client.subscribe(AUDIT_SUBJECT, cb=collect)
    trail = AuditTrail(bus)
    await trail.start()
    try:
        for n in range(120):
            trail.record(
                audit_event(
                    principal=ANONYMOUS,
                    action=None,
                    method="GET",
                    route=f"/route/{n}",
                    path_params={},
                    status=200,
                    duration=0.001,
                    source_address="127.0.0.1",
                )
            )
        await trail.close()
        for _ in range(200):
            if sum(len(data.splitlines()) for data, _ in messages) >= 120:
                break
            await asyncio.sleep(0.01)
    finally:
        await subscription.unsubscribe()
    routes = [
        AuditEvent.model_validate_json(line).route
        for data, _ in messages
        for line in data.splitlines()
    ]
    assert sorted(routes) == sorted(f"/route/{n}" for n in range(120))
    assert len(messages) < 120 / 10
    assert all(int(headers[COUNT_HEADER]) == len(data.splitlines()) for data, headers in messages)
    stream = await bus.jetstream.stream_info(AUDIT_STREAM)
    assert stream.state.messages == len(messages)
