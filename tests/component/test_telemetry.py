"""Traces across HTTP and the bus, against a real nats-server: one STOW-like request is one
trace (gateway SERVER → bus CLIENT → service SERVER → …), the caller's trace is continued, and
no span ever carries what a client wrote in a query string or an unmatched path (ARCHITECTURE
invariant 10). Spans are collected with the SDK's in-memory exporter."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tessera.natsd import NatsServer
from tessera_common.bus import Bus
from tessera_common.errors import ErrorCode, TesseraError
from tessera_common.messages import Ping, Pong
from tessera_common.telemetry import setup_tracing
from tessera_gateway.errors import error_middleware
from tessera_gateway.observability import add_metrics_route, observability_middleware

INGEST = "tessera.v1.teststore.ingest"
INDEX = "tessera.v1.testquery.index"
SEARCH = "tessera.v1.testquery.search"
STORED = "tessera.v1.events.test.stored"

STUDY = "1.2.826.0.1.3680043.8.498.1"
PATIENT_NAME = "DOE^JANE"
PATIENT_ID = "PAT-7741"
BIRTH_DATE = "19700315"
PHI = (PATIENT_NAME, "DOE", "JANE", PATIENT_ID, BIRTH_DATE)

GATEWAY_BUS = web.AppKey("bus", Bus)


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    setup_tracing("tessera-test", environ={"OTEL_TRACES_SAMPLER": "always_on"})
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider), "setup_tracing installs the SDK provider"
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def nats_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    server = NatsServer(tmp_path_factory.mktemp("nats"))
    await server.start()
    try:
        yield server.url
    finally:
        await server.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def services(nats_url: str) -> AsyncIterator[Bus]:
    """Stand-ins for the store and query services, on their own connection."""
    bus = await Bus.connect(nats_url, name="test-services", request_timeout=5)
    await bus.ensure_streams()

    async def index(_: Ping) -> Pong:
        return Pong(service="query", ready=True)

    async def ingest(_: Ping) -> Pong:
        await bus.publish_event(STORED, Pong(service="store", ready=True), msg_id="one")
        await bus.request(INDEX, Ping(), Pong)
        return Pong(service="store", ready=True)

    async def search(message: Pong) -> Pong:
        if message.detail == "missing":
            raise TesseraError(ErrorCode.NOT_FOUND, "no such study")
        return Pong(service="query", ready=True)

    await bus.serve(INDEX, Ping, index, queue="testquery")
    await bus.serve(INGEST, Ping, ingest, queue="teststore")
    await bus.serve(SEARCH, Pong, search, queue="testquery")
    try:
        yield bus
    finally:
        await bus.close()


def gateway_app(bus: Bus) -> web.Application:
    """A gateway-shaped app: the real middleware order, DICOMweb-shaped routes."""

    async def store_instances(request: web.Request) -> web.Response:
        await request.read()
        await request.app[GATEWAY_BUS].request(INGEST, Ping(), Pong)
        return web.json_response({"stored": 1})

    async def search_studies(request: web.Request) -> web.Response:
        # Like QIDO-RS: the query (with the patient's name) travels to the query service.
        detail = "&".join(f"{key}={value}" for key, value in request.query.items())
        await request.app[GATEWAY_BUS].request(
            SEARCH, Pong(service="gateway", ready=True, detail=detail), Pong
        )
        return web.json_response([])

    async def retrieve_study(request: web.Request) -> web.Response:
        await request.app[GATEWAY_BUS].request(
            SEARCH, Pong(service="gateway", ready=True, detail="missing"), Pong
        )
        raise AssertionError("not reached: the study is missing")

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        await request.app[GATEWAY_BUS].request(INDEX, Ping(), Pong)
        return web.json_response({"status": "ready"})

    async def crash(request: web.Request) -> web.Response:
        raise ZeroDivisionError(f"while handling {PATIENT_NAME}")

    app = web.Application(middlewares=[observability_middleware, error_middleware])
    app[GATEWAY_BUS] = bus
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    add_metrics_route(app.router)
    app.router.add_post("/dicom-web/studies", store_instances)
    app.router.add_get("/dicom-web/studies", search_studies)
    app.router.add_get("/dicom-web/studies/{study}", retrieve_study)
    app.router.add_get("/dicom-web/crash", crash)
    return app


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def client(
    nats_url: str, services: Bus
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    bus = await Bus.connect(nats_url, name="test-gateway", request_timeout=5)
    test_client = TestClient(TestServer(gateway_app(bus), host="127.0.0.1"))
    await test_client.start_server()
    try:
        yield test_client
    finally:
        await test_client.close()
        await bus.close()


async def finished_spans(
    exporter: InMemorySpanExporter, done: Callable[[list[ReadableSpan]], bool]
) -> list[ReadableSpan]:
    """The spans exported so far, once ``done`` says the expected ones have ended."""
    for _ in range(100):
        collected = list(exporter.get_finished_spans())
        if done(collected):
            return collected
        await asyncio.sleep(0.02)
    return list(exporter.get_finished_spans())


def one(spans: list[ReadableSpan], name: str, kind: SpanKind) -> ReadableSpan:
    matching = [s for s in spans if s.name == name and s.kind is kind]
    assert len(matching) == 1, f"one {kind.name} span {name!r}: {[s.name for s in spans]}"
    return matching[0]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_one_stow_is_one_trace_across_the_bus(
    client: TestClient[web.Request, web.Application], spans: InMemorySpanExporter
) -> None:
    spans.clear()
    response = await client.post("/dicom-web/studies", data=b"multipart body")
    assert response.status == 200
    collected = await finished_spans(spans, lambda s: len(s) >= 6)

    http = one(collected, "POST /dicom-web/studies", SpanKind.SERVER)
    ingest_client = one(collected, INGEST, SpanKind.CLIENT)
    ingest_server = one(collected, INGEST, SpanKind.SERVER)
    stored = one(collected, STORED, SpanKind.PRODUCER)
    index_client = one(collected, INDEX, SpanKind.CLIENT)
    index_server = one(collected, INDEX, SpanKind.SERVER)
    chain = [http, ingest_client, ingest_server, stored, index_client, index_server]

    assert len({s.context.trace_id for s in collected}) == 1, "one request, one trace"
    assert http.parent is None, "no incoming traceparent: the gateway starts the trace"
    assert parent_of(ingest_client) == http.context.span_id
    assert parent_of(ingest_server) == ingest_client.context.span_id
    assert parent_of(stored) == ingest_server.context.span_id
    assert parent_of(index_client) == ingest_server.context.span_id
    assert parent_of(index_server) == index_client.context.span_id
    assert all(s.status.status_code is not StatusCode.ERROR for s in chain)

    assert http.attributes is not None
    assert http.attributes["http.route"] == "/dicom-web/studies"
    assert http.attributes["http.request.method"] == "POST"
    assert http.attributes["http.response.status_code"] == 200
    assert ingest_server.attributes is not None
    assert ingest_server.attributes["messaging.destination.name"] == INGEST


async def test_the_callers_trace_is_continued(
    client: TestClient[web.Request, web.Application], spans: InMemorySpanExporter
) -> None:
    spans.clear()
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    caller_span = "00f067aa0ba902b7"
    response = await client.post(
        "/dicom-web/studies",
        data=b"body",
        headers={"traceparent": f"00-{trace_id}-{caller_span}-01"},
    )
    assert response.status == 200
    collected = await finished_spans(spans, lambda s: len(s) >= 6)
    http = one(collected, "POST /dicom-web/studies", SpanKind.SERVER)
    assert http.parent is not None and http.parent.is_remote
    assert format(http.parent.span_id, "016x") == caller_span
    assert {format(s.context.trace_id, "032x") for s in collected} == {trace_id}


async def test_path_uids_are_recorded_and_errors_keep_their_status(
    client: TestClient[web.Request, web.Application], spans: InMemorySpanExporter
) -> None:
    spans.clear()
    response = await client.get(f"/dicom-web/studies/{STUDY}")
    assert response.status == 404
    collected = await finished_spans(
        spans, lambda s: any(x.kind is SpanKind.SERVER and x.name.startswith("GET") for x in s)
    )
    http = one(collected, "GET /dicom-web/studies/{study}", SpanKind.SERVER)
    assert http.attributes is not None
    assert http.attributes["dicom.study_instance_uid"] == STUDY
    assert http.attributes["http.response.status_code"] == 404
    assert http.status.status_code is not StatusCode.ERROR, "4xx is not a server error"
    search_server = one(collected, SEARCH, SpanKind.SERVER)
    assert search_server.attributes is not None
    assert search_server.attributes["tessera.error"] == "not-found"


async def test_server_errors_mark_the_span(
    client: TestClient[web.Request, web.Application], spans: InMemorySpanExporter
) -> None:
    spans.clear()
    response = await client.get("/dicom-web/crash")
    assert response.status == 500
    collected = await finished_spans(spans, lambda s: len(s) >= 1)
    http = one(collected, "GET /dicom-web/crash", SpanKind.SERVER)
    assert http.status.status_code is StatusCode.ERROR
    assert http.attributes is not None and http.attributes["error.type"] == "500"
    assert not http.events, "exception messages are not recorded: they may quote PHI"


PHI_REQUESTS = [
    pytest.param(
        f"/dicom-web/studies?PatientName={PATIENT_NAME}&PatientID={PATIENT_ID}"
        f"&PatientBirthDate={BIRTH_DATE}",
        200,
        id="qido-query-string",
    ),
    pytest.param(f"/dicom-web/studies/{PATIENT_NAME}", 404, id="name-where-a-uid-belongs"),
    pytest.param(f"/dicom-web/patients/{PATIENT_ID}/{BIRTH_DATE}", 404, id="unmatched-path"),
    pytest.param(f"/dicom-web/crash?PatientName={PATIENT_NAME}", 500, id="failing-request"),
]


@pytest.mark.parametrize(("target", "status"), PHI_REQUESTS)
async def test_no_patient_data_in_spans_or_metrics(
    client: TestClient[web.Request, web.Application],
    spans: InMemorySpanExporter,
    target: str,
    status: int,
) -> None:
    spans.clear()
    response = await client.get(target)
    assert response.status == status
    collected = await finished_spans(
        spans, lambda s: any(x.kind is SpanKind.SERVER and x.name.startswith("GET") for x in s)
    )
    assert collected
    for span in collected:
        text = span.to_json()
        for value in PHI:
            assert value not in text, f"{value!r} leaked into span {span.name!r}"
    metrics = await (await client.get("/metrics")).text()
    for value in PHI:
        assert value not in metrics


async def test_probes_and_scrapes_are_not_traced(
    client: TestClient[web.Request, web.Application], spans: InMemorySpanExporter
) -> None:
    spans.clear()
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await client.get(path)).status == 200
    await asyncio.sleep(0.1)
    assert [s.name for s in spans.get_finished_spans()] == [], (
        "probes (and the bus pings behind /readyz) leave no trace"
    )


def test_setup_tracing_is_idempotent() -> None:
    """Every service calls ``setup_tracing``; a second call must not replace the provider."""
    provider = trace.get_tracer_provider()
    setup_tracing("tessera-other", environ={"OTEL_TRACES_EXPORTER": "console"})
    assert trace.get_tracer_provider() is provider
