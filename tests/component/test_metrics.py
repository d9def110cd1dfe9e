"""Prometheus metrics: the bus histograms against a real nats-server, the gateway's HTTP
histogram and ``/metrics``, the probe/metrics server of bus-only services, worker load."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from tessera.natsd import NatsServer
from tessera_common.bus import Bus
from tessera_common.errors import ErrorCode, TesseraError
from tessera_common.messages import Ping, Pong
from tessera_common.metrics import WorkerLoad, serving_metrics, start_metrics_server
from tessera_gateway.errors import error_middleware
from tessera_gateway.observability import add_metrics_route, observability_middleware

OK_SUBJECT = "tessera.v1.metricstest.ok"
MISSING_SUBJECT = "tessera.v1.metricstest.missing"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def bus(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Bus]:
    server = NatsServer(tmp_path_factory.mktemp("nats"))
    await server.start()
    connected = await Bus.connect(server.url, name="test-metrics", request_timeout=5)

    async def ok(_: Ping) -> Pong:
        return Pong(service="t", ready=True)

    async def missing(_: Ping) -> Pong:
        raise TesseraError(ErrorCode.NOT_FOUND, "no such thing")

    await connected.serve(OK_SUBJECT, Ping, ok, queue="metricstest")
    await connected.serve(MISSING_SUBJECT, Ping, missing, queue="metricstest")
    try:
        yield connected
    finally:
        await connected.close()
        await server.stop()


async def test_bus_requests_and_handlers_are_timed_by_subject_and_outcome(bus: Bus) -> None:
    request_count = "tessera_bus_request_duration_seconds_count"
    handler_count = "tessera_bus_handler_duration_seconds_count"
    before = {
        "request_ok": sample(request_count, subject=OK_SUBJECT, outcome="ok"),
        "handler_ok": sample(handler_count, subject=OK_SUBJECT, outcome="ok"),
        "request_missing": sample(request_count, subject=MISSING_SUBJECT, outcome="not-found"),
        "handler_missing": sample(handler_count, subject=MISSING_SUBJECT, outcome="not-found"),
    }
    for _ in range(3):
        await bus.request(OK_SUBJECT, Ping(), Pong)
    with pytest.raises(TesseraError):
        await bus.request(MISSING_SUBJECT, Ping(), Pong)

    assert sample(request_count, subject=OK_SUBJECT, outcome="ok") == before["request_ok"] + 3
    assert sample(handler_count, subject=OK_SUBJECT, outcome="ok") == before["handler_ok"] + 3
    assert (
        sample(request_count, subject=MISSING_SUBJECT, outcome="not-found")
        == before["request_missing"] + 1
    )
    assert (
        sample(handler_count, subject=MISSING_SUBJECT, outcome="not-found")
        == before["handler_missing"] + 1
    )
    assert sample("tessera_bus_handlers_in_flight", subject=OK_SUBJECT) == 0


async def test_gateway_metrics_endpoint_exposes_the_histograms(bus: Bus) -> None:
    async def search(request: web.Request) -> web.Response:
        await bus.request(OK_SUBJECT, Ping(), Pong)
        return web.json_response([])

    app = web.Application(middlewares=[observability_middleware, error_middleware])
    app.router.add_get("/dicom-web/studies/{study}/series", search)
    add_metrics_route(app.router)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        assert (await client.get("/dicom-web/studies/1.2.3/series")).status == 200
        assert (await client.get("/dicom-web/nothing-here")).status == 404
        response = await client.get("/metrics")
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()

    families = {family.name: family for family in text_string_to_metric_families(text)}
    for name in (
        "tessera_http_request_duration_seconds",
        "tessera_bus_request_duration_seconds",
        "tessera_bus_handler_duration_seconds",
    ):
        assert families[name].type == "histogram", name
    http_routes = {
        s.labels["route"]
        for s in families["tessera_http_request_duration_seconds"].samples
        if s.name.endswith("_count")
    }
    assert "/dicom-web/studies/{study}/series" in http_routes, "the template, not the path"
    assert "unmatched" in http_routes
    assert not any("1.2.3" in route or "nothing-here" in route for route in http_routes)
    assert 'subject="tessera.v1.metricstest.ok"' in text


async def test_openmetrics_is_negotiated() -> None:
    server = await start_metrics_server(0)
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{server.port}/metrics"
            headers = {"Accept": "application/openmetrics-text; version=1.0.0"}
            async with session.get(url, headers=headers) as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("application/openmetrics-text")
                assert (await response.text()).rstrip().endswith("# EOF")
    finally:
        await server.close()


@pytest.mark.parametrize(
    ("ready", "status"),
    [
        pytest.param(None, 200, id="no-check"),
        pytest.param(True, 200, id="ready"),
        pytest.param(False, 503, id="not-ready"),
        pytest.param(RuntimeError, 503, id="check-fails"),
    ],
)
async def test_metrics_server_answers_probes(ready: object, status: int) -> None:
    async def check() -> bool:
        if ready is RuntimeError:
            raise RuntimeError("index unreachable")
        return bool(ready)

    server = await start_metrics_server(0, ready=None if ready is None else check)
    try:
        async with aiohttp.ClientSession() as session:
            base = f"http://127.0.0.1:{server.port}"
            async with session.get(f"{base}/healthz") as response:
                assert response.status == 200
            async with session.get(f"{base}/readyz") as response:
                assert response.status == status
                body = await response.json()
                assert body["status"] == ("ready" if status == 200 else "not ready")
            async with session.get(f"{base}/metrics") as response:
                assert response.status == 200
                assert "tessera_bus_request_duration_seconds" in await response.text()
    finally:
        await server.close()


async def test_serving_metrics_is_optional_and_closes() -> None:
    async with serving_metrics(None) as nothing:
        assert nothing is None
    async with serving_metrics(0) as server:
        assert server is not None
        port = server.port
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/healthz") as response,
        ):
            assert response.status == 200
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"http://127.0.0.1:{port}/healthz")


def test_worker_load_counts_running_and_queued_jobs() -> None:
    load = WorkerLoad("testpool", workers=2)
    in_progress = "tessera_work_in_progress"
    queued = "tessera_work_queued"
    assert sample("tessera_workers", service="testpool") == 2
    done = sample(
        "tessera_work_duration_seconds_count", service="testpool", operation="frame", outcome="ok"
    )
    with load.job("frame"), load.job("frame"), load.job("frame"):
        assert sample(in_progress, service="testpool") == 2
        assert sample(queued, service="testpool") == 1
    with pytest.raises(ValueError), load.job("frame"):
        raise ValueError("decoder failed")
    assert sample(in_progress, service="testpool") == 0
    assert sample(queued, service="testpool") == 0
    assert (
        sample(
            "tessera_work_duration_seconds_count",
            service="testpool",
            operation="frame",
            outcome="ok",
        )
        == done + 3
    )
    assert (
        sample(
            "tessera_work_duration_seconds_count",
            service="testpool",
            operation="frame",
            outcome="exception",
        )
        >= 1
    )
