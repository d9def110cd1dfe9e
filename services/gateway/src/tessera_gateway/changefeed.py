"""``GET {base}/changefeed`` and ``GET {base}/changefeed/latest`` (docs/EVENTS.md).

Modelled on Microsoft's DICOM service change feed (v2): a JSON array of entries, oldest first,
selected by ``startTime`` (inclusive) / ``endTime`` (exclusive), ``offset`` (the last
``Sequence`` already seen) and ``limit`` (1…1000, default 100); ``includeMetadata`` (default
true) adds each current instance's DICOM JSON. DICOMweb (PS3.18) defines no change feed.

The array is written entry by entry as it is read from the stream, so a page of a thousand
entries with metadata is never held in memory. Errors found before the first byte (bad
parameters: 400; the event stream unreachable: 503) are answered as usual; a failure after it
cuts the connection, so a client never mistakes a truncated page for a complete one.
"""

from __future__ import annotations

import logging

import nats.errors
import orjson
from aiohttp import web

from tessera_common.errors import ErrorCode, TesseraError

from . import webhooks
from .changefeed_log import EventLog, StreamBounds
from .changefeed_model import ChangeFeedQueryError, parse_latest_query, parse_query
from .context import BLOBS, BUS, service_root

log = logging.getLogger(__name__)

FIRST_SEQUENCE_HEADER = "Tessera-Changefeed-First-Sequence"
LAST_SEQUENCE_HEADER = "Tessera-Changefeed-Last-Sequence"


def setup_changefeed(app: web.Application, base: str) -> None:
    """The change feed's routes, and the webhook deliveries when any are configured."""
    app.router.add_get(base + "/changefeed", read_feed)
    app.router.add_get(base + "/changefeed/latest", read_latest)
    app.cleanup_ctx.append(webhooks.deliver_webhooks)


def _event_log(request: web.Request) -> EventLog:
    return EventLog(request.app[BUS].jetstream, request.app[BLOBS])


def _unavailable(exc: Exception) -> TesseraError:
    return TesseraError(
        ErrorCode.SERVICE_UNAVAILABLE,
        f"the event stream cannot be read right now ({type(exc).__name__}); retry later",
    )


def _bounds_headers(bounds: StreamBounds) -> dict[str, str]:
    """The sequences the stream holds now; an ``offset`` below first - 1 has missed entries
    that aged out of the stream."""
    return {FIRST_SEQUENCE_HEADER: str(bounds.first), LAST_SEQUENCE_HEADER: str(bounds.last)}


async def read_feed(request: web.Request) -> web.StreamResponse:
    try:
        query = parse_query(request.query.items())
    except ChangeFeedQueryError as exc:
        raise TesseraError(ErrorCode.BAD_REQUEST, str(exc)) from exc
    event_log = _event_log(request)
    root = service_root(request)
    try:
        bounds = await event_log.bounds()
        entries = event_log.entries(query, bounds, service_root=root)
        first = await anext(entries, None)
    except (nats.errors.Error, TimeoutError) as exc:
        raise _unavailable(exc) from exc
    response = web.StreamResponse(headers=_bounds_headers(bounds))
    response.content_type = "application/json"
    await response.prepare(request)
    try:
        if first is None:
            await response.write(b"[]")
        else:
            await response.write(b"[" + orjson.dumps(first))
            async for entry in entries:
                await response.write(b"," + orjson.dumps(entry))
            await response.write(b"]")
    except Exception as exc:  # the response has begun: no error status can follow
        log.warning("change feed page cut short: %s", type(exc).__name__)
        if request.transport is not None:
            request.transport.close()
        return response
    finally:
        await entries.aclose()
    await response.write_eof()
    return response


async def read_latest(request: web.Request) -> web.Response:
    """The newest entry (an object), or 204 No Content while the feed is empty."""
    try:
        include_metadata = parse_latest_query(request.query.items())
    except ChangeFeedQueryError as exc:
        raise TesseraError(ErrorCode.BAD_REQUEST, str(exc)) from exc
    try:
        entry = await _event_log(request).latest(
            include_metadata=include_metadata, service_root=service_root(request)
        )
    except (nats.errors.Error, TimeoutError) as exc:
        raise _unavailable(exc) from exc
    if entry is None:
        return web.Response(status=204)
    return web.Response(body=orjson.dumps(entry), content_type="application/json")
