"""Prometheus metrics shared by every service, and the small HTTP server that exposes them.

Each process keeps its metrics in ``prometheus_client``'s default registry (one per process,
as Prometheus expects: it adds the pod/instance labels when it scrapes). The gateway serves
``/metrics`` on its own port; bus-only services (store, query, render, codec) start
``start_metrics_server`` on a separate port, which also answers the ``/healthz`` and
``/readyz`` probes.

Labels are bounded sets only: bus subjects (``messages.Subject``), route *templates*
(``/dicom-web/studies/{study}``, never a raw path: paths hold UIDs), HTTP status codes, wire
names of ``ErrorCode``. Never a UID, never a patient attribute (ARCHITECTURE invariant 10).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING

import orjson
from prometheus_client import REGISTRY, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

if TYPE_CHECKING:  # the HTTP side is imported when used: the bus needs only the metrics
    from aiohttp import web

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip
"""Seconds, 1 ms to 5 min: a ping is a millisecond, a large STOW takes minutes."""

OUTCOME_OK = "ok"
"""The ``outcome`` label of a success; failures carry an ``ErrorCode`` wire name, or
``exception`` / ``cancelled`` for anything else."""

# --- the bus (tessera_common.bus) ------------------------------------------------------------

BUS_REQUEST_SECONDS = Histogram(
    "tessera_bus_request_duration_seconds",
    "Bus request/reply as seen by the requester: from sending to the parsed reply "
    "(including waiting for a restarting service)",
    ["subject", "outcome"],
    buckets=LATENCY_BUCKETS,
)
BUS_HANDLER_SECONDS = Histogram(
    "tessera_bus_handler_duration_seconds",
    "Bus request handling as seen by the serving service",
    ["subject", "outcome"],
    buckets=LATENCY_BUCKETS,
)
BUS_HANDLERS_IN_FLIGHT = Gauge(
    "tessera_bus_handlers_in_flight",
    "Bus requests this process is handling now",
    ["subject"],
)
BUS_PUBLISH_SECONDS = Histogram(
    "tessera_bus_publish_duration_seconds",
    "Durable event publication until JetStream has stored the event",
    ["subject", "outcome"],
    buckets=LATENCY_BUCKETS,
)

# --- HTTP (the gateway) ------------------------------------------------------------------------

HTTP_REQUEST_SECONDS = Histogram(
    "tessera_http_request_duration_seconds",
    "HTTP requests by route template, method and status (the _count series is the request count)",
    ["route", "method", "status"],
    buckets=LATENCY_BUCKETS,
)
HTTP_REQUESTS_IN_FLIGHT = Gauge(
    "tessera_http_requests_in_flight",
    "HTTP requests being served now",
)

# --- CPU worker pools (render, codec) ----------------------------------------------------------

WORKERS = Gauge(
    "tessera_workers",
    "Size of this process's CPU worker pool",
    ["service"],
)
WORK_IN_PROGRESS = Gauge(
    "tessera_work_in_progress",
    "Jobs running in this process's CPU workers",
    ["service"],
)
WORK_QUEUED = Gauge(
    "tessera_work_queued",
    "Jobs accepted by this process and waiting for a free worker",
    ["service"],
)
WORK_SECONDS = Histogram(
    "tessera_work_duration_seconds",
    "CPU jobs from acceptance to result (waiting included)",
    ["service", "operation", "outcome"],
    buckets=LATENCY_BUCKETS,
)


class WorkerLoad:
    """Load of one CPU worker pool, for the render and codec services (and their HPA).

    Wrap every job handed to the pool; the gauges follow how many jobs are outstanding::

        load = WorkerLoad("render", workers=4)
        ...
        with load.job("frame"):
            image = await loop.run_in_executor(pool, render_frame, params)

    Jobs beyond ``workers`` are counted as queued, the others as in progress, so
    ``tessera_work_in_progress / tessera_workers`` is the pool's utilisation.
    """

    def __init__(self, service: str, workers: int) -> None:
        self.service = service
        self.workers = max(1, workers)
        self._outstanding = 0
        self._in_progress = WORK_IN_PROGRESS.labels(service)
        self._queued = WORK_QUEUED.labels(service)
        self._seconds = WORK_SECONDS
        WORKERS.labels(service).set(self.workers)
        self._publish()

    @property
    def outstanding(self) -> int:
        return self._outstanding

    @contextmanager
    def job(self, operation: str) -> Iterator[None]:
        """Count one job from acceptance until its result (or failure)."""
        self._outstanding += 1
        self._publish()
        start = time.perf_counter()
        outcome = "exception"
        try:
            yield
            outcome = OUTCOME_OK
        finally:
            self._outstanding -= 1
            self._publish()
            self._seconds.labels(self.service, operation, outcome).observe(
                time.perf_counter() - start
            )

    def _publish(self) -> None:
        self._in_progress.set(min(self._outstanding, self.workers))
        self._queued.set(max(0, self._outstanding - self.workers))


# --- exposition --------------------------------------------------------------------------------


def exposition(accept: str | None) -> tuple[bytes, str]:
    """The registry in the text format the scraper asked for (Prometheus or OpenMetrics)."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(REGISTRY), content_type


async def metrics_handler(request: web.Request) -> web.Response:
    """``GET /metrics``: every metric of this process."""
    from aiohttp import web

    body, content_type = exposition(request.headers.get("Accept"))
    return web.Response(body=body, headers={"Content-Type": content_type})


ReadinessCheck = Callable[[], Awaitable[bool]]
PROBE_TIMEOUT = 3.0


class MetricsServer:
    """A small HTTP server beside a bus-only service: ``/metrics``, ``/healthz``, ``/readyz``.

    It runs on the service's own event loop, so ``/healthz`` also proves that the loop is not
    blocked (ARCHITECTURE invariant 7): a service whose loop hangs fails its liveness probe.
    """

    def __init__(self, runner: web.AppRunner) -> None:
        self._runner = runner

    @property
    def port(self) -> int:
        """The bound port (useful when started on port 0)."""
        address = self._runner.addresses[0]
        return int(address[1])

    async def close(self) -> None:
        await self._runner.cleanup()


async def start_metrics_server(
    port: int, *, host: str = "127.0.0.1", ready: ReadinessCheck | None = None
) -> MetricsServer:
    """Serve ``/metrics``, ``/healthz`` (alive) and ``/readyz`` on ``host:port``.

    ``ready`` is awaited by ``/readyz`` (at most ``PROBE_TIMEOUT`` seconds); without it the
    service is ready as soon as the server runs. Close the returned server on shutdown.
    """
    from aiohttp import web

    app = web.Application()
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz_for(ready))
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    server = MetricsServer(runner)
    log.info("metrics and probes on http://%s:%d/metrics", host, server.port)
    return server


@asynccontextmanager
async def serving_metrics(
    port: int | None, *, host: str = "127.0.0.1", ready: ReadinessCheck | None = None
) -> AsyncIterator[MetricsServer | None]:
    """``start_metrics_server`` for the life of a block; nothing at all when ``port`` is None
    (embedded mode runs several services on one host and leaves it unset)::

        async with serving_metrics(settings.metrics_port, host=settings.host, ready=ready):
            await asyncio.Event().wait()
    """
    if port is None:
        yield None
        return
    server = await start_metrics_server(port, host=host, ready=ready)
    try:
        yield server
    finally:
        await server.close()


async def _healthz(request: web.Request) -> web.Response:
    from aiohttp import web

    return web.json_response({"status": "ok"}, dumps=_dumps)


def _readyz_for(ready: ReadinessCheck | None) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def readyz(request: web.Request) -> web.Response:
        from aiohttp import web

        if ready is None:
            return web.json_response({"status": "ready"}, dumps=_dumps)
        try:
            is_ready = await asyncio.wait_for(ready(), PROBE_TIMEOUT)
            detail = "" if is_ready else "not ready"
        except Exception as exc:
            is_ready, detail = False, f"error: {type(exc).__name__}"
        body = {"status": "ready"} if is_ready else {"status": "not ready", "detail": detail}
        return web.json_response(body, status=200 if is_ready else 503, dumps=_dumps)

    return readyz


def _dumps(value: object) -> str:
    return orjson.dumps(value).decode()
