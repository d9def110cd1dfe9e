"""Liveness and readiness probes (used by the supervisor and by Kubernetes)."""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import web

from tessera_common.errors import TesseraError
from tessera_common.messages import Ping, Pong, Subject

from .context import BLOBS, BUS

PROBE_TIMEOUT = 3.0


async def healthz(request: web.Request) -> web.Response:
    """Alive: the gateway process answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready: NATS connected, object storage listable, store and query services answering
    (the query service's ping also touches its index)."""
    checks: dict[str, str] = {}
    bus = request.app[BUS]
    checks["nats"] = "ok" if bus.connected else "disconnected"

    async def blob_check() -> str:
        try:
            await asyncio.wait_for(request.app[BLOBS].ping(), PROBE_TIMEOUT)
        except Exception as exc:
            return f"error: {type(exc).__name__}"
        return "ok"

    async def service_check(subject: Subject) -> str:
        try:
            pong = await bus.request(subject, Ping(), Pong, timeout=PROBE_TIMEOUT)
        except TesseraError as exc:
            return f"error: {exc.reason}"
        return "ok" if pong.ready else f"not ready: {pong.detail}"

    storage, store, query = await asyncio.gather(
        blob_check(), service_check(Subject.STORE_PING), service_check(Subject.QUERY_PING)
    )
    checks.update(storage=storage, store=store, query=query)
    ready = all(v == "ok" for v in checks.values())
    return web.Response(
        status=200 if ready else 503,
        body=orjson.dumps({"status": "ready" if ready else "not ready", "checks": checks}),
        content_type="application/json",
    )
