"""Graceful shutdown: drain in-flight requests, refuse new ones with 503 (RFC 9110 §15.6.4).

On SIGTERM the gateway stops taking new work — a request arriving while it drains gets a 503
with ``Retry-After`` and a JSON reason, so a client or load balancer retries elsewhere — while
the requests already in flight (a STOW being ingested) finish within a bounded grace period.
"""

from __future__ import annotations

import asyncio
import logging

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from tessera_common.errors import ErrorCode

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5


class Drain:
    """Counts in-flight requests; once closing, lets none in and waits for the rest."""

    def __init__(self) -> None:
        self.closing = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def close(self, grace: float) -> bool:
        """Refuse new requests and wait up to ``grace`` seconds; True if all finished."""
        self.closing = True
        try:
            async with asyncio.timeout(grace):
                await self._idle.wait()
        except TimeoutError:
            log.warning("%d request(s) still running after %.0f s; stopping", self.in_flight, grace)
            return False
        return True


DRAIN = web.AppKey("drain", Drain)


def unavailable_response() -> web.Response:
    spec = ErrorCode.SERVICE_UNAVAILABLE.spec
    body = {
        "error": ErrorCode.SERVICE_UNAVAILABLE.value,
        "title": spec.title,
        "reason": "the gateway is shutting down; retry shortly",
        "see": spec.citation,
    }
    return web.Response(
        status=spec.http_status,
        body=orjson.dumps(body),
        content_type="application/json",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


@web.middleware
async def shutdown_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    drain = request.app[DRAIN]
    if drain.closing:
        return unavailable_response()
    drain.enter()
    try:
        return await handler(request)
    finally:
        drain.leave()
