"""One real STOW-RS request is one trace through the real gateway, store and query services.

The three services run in this process (so the SDK's in-memory exporter sees every span) over
a real nats-server, with the local blob store and SQLite: the same code paths as distributed
mode, wired exactly as ``tessera gateway`` / ``store`` / ``query`` wire them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pydicom.data
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import REGISTRY
from tests.support.http import multipart_body

from tessera.natsd import NatsServer
from tessera_common.messages import Subject
from tessera_common.settings import Settings
from tessera_common.telemetry import setup_tracing
from tessera_gateway.observability import observability_middleware

CT_SMALL = Path(pydicom.data.__file__).parent / "test_files" / "CT_small.dcm"
MR_SMALL = Path(pydicom.data.__file__).parent / "test_files" / "MR_small.dcm"
READY_TIMEOUT = 30.0

Client = TestClient[web.Request, web.Application]


@pytest_asyncio.fixture(loop_scope="session")
async def exporter() -> InMemorySpanExporter:
    setup_tracing("tessera-test", environ={"OTEL_TRACES_SAMPLER": "always_on"})
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return memory


@pytest_asyncio.fixture(loop_scope="session")
async def gateway(tmp_path: Path) -> AsyncIterator[Client]:
    # Imported here: a service module being reworked fails this test, not the collection.
    from tessera_gateway.app import build_app
    from tessera_query import service as query_service
    from tessera_store import service as store_service

    server = NatsServer(tmp_path / "nats")
    await server.start()
    services: list[asyncio.Task[None]] = []
    client: Client | None = None
    try:
        settings = Settings(
            data_dir=tmp_path,
            nats_url=server.url,
            blob_backend="local",
            blob_root=tmp_path / "objects",
            request_timeout=30,
        )
        services = [
            asyncio.create_task(store_service.run(settings), name="store"),
            asyncio.create_task(query_service.run(settings), name="query"),
        ]
        app = build_app(settings)
        if observability_middleware not in app.middlewares:  # until app.py wires it itself
            app.middlewares.insert(0, observability_middleware)
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        await wait_ready(client, services)
        yield client
    finally:
        if client is not None:
            await client.close()
        for task in services:
            task.cancel()
        for task in services:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await server.stop()


async def wait_ready(client: Client, services: list[asyncio.Task[None]]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_TIMEOUT
    while loop.time() < deadline:
        for task in services:
            if task.done():
                task.result()  # raises what stopped the service
        if (await client.get("/readyz")).status == 200:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("store and query did not become ready")


async def stow(gateway: Client, path: Path) -> None:
    body, content_type = multipart_body([await asyncio.to_thread(path.read_bytes)])
    response = await gateway.post(
        "/dicom-web/studies",
        data=body,
        headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
    )
    assert response.status == 200, await response.text()


def handled(subject: str) -> float:
    labels = {"subject": subject, "outcome": "ok"}
    return REGISTRY.get_sample_value("tessera_bus_handler_duration_seconds_count", labels) or 0.0


async def test_one_stow_is_one_trace_through_gateway_store_and_query(
    gateway: Client, exporter: InMemorySpanExporter
) -> None:
    ingested_before = handled(Subject.STORE_INGEST)
    exporter.clear()
    await stow(gateway, CT_SMALL)

    expected = {
        ("POST /dicom-web/studies", SpanKind.SERVER),  # gateway
        (Subject.STORE_INGEST.value, SpanKind.CLIENT),  # gateway → store
        (Subject.STORE_INGEST.value, SpanKind.SERVER),  # store
        (Subject.EVENT_INSTANCE_STORED.value, SpanKind.PRODUCER),  # store → JetStream
        (Subject.QUERY_INDEX.value, SpanKind.CLIENT),  # store → query
        (Subject.QUERY_INDEX.value, SpanKind.SERVER),  # query
    }
    for _ in range(100):
        spans = list(exporter.get_finished_spans())
        if expected <= {(span.name, span.kind) for span in spans}:
            break
        await asyncio.sleep(0.05)
    seen = {(span.name, span.kind) for span in spans}
    assert expected <= seen, f"missing {expected - seen}; saw {sorted(seen)}"
    assert len({span.context.trace_id for span in spans}) == 1, "one STOW, one trace"

    by_id = {span.context.span_id: span for span in spans}
    (http,) = [span for span in spans if span.kind is SpanKind.SERVER and span.parent is None]
    for span in spans:
        if span is http:
            continue
        ancestor = span
        while ancestor.parent is not None:
            ancestor = by_id[ancestor.parent.span_id]
        assert ancestor is http, f"{span.name} hangs off the gateway's request span"
    assert handled(Subject.STORE_INGEST) == ingested_before + 1


async def test_the_event_consumer_continues_the_stow_trace(
    gateway: Client, exporter: InMemorySpanExporter
) -> None:
    """The query service's JetStream consumer (catch-up indexing) processes each stored
    event in a CONSUMER span of the trace of the STOW that published it."""
    exporter.clear()
    await stow(gateway, MR_SMALL)
    name = f"{Subject.EVENT_INSTANCE_STORED} process"
    for _ in range(200):  # the consumer waits CATCH_UP_DELAY (2 s) before it looks
        spans = list(exporter.get_finished_spans())
        consumed = [span for span in spans if span.name == name]
        if consumed:
            break
        await asyncio.sleep(0.05)
    assert consumed, "no consumer span"
    (http,) = [span for span in spans if span.kind is SpanKind.SERVER and span.parent is None]
    assert consumed[0].kind is SpanKind.CONSUMER
    assert consumed[0].context.trace_id == http.context.trace_id
