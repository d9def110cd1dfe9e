"""Turns ``TesseraError`` (and anything unexpected) into an HTTP response with a reason."""

from __future__ import annotations

import logging

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from tessera_common.blobstore import BlobNotFoundError
from tessera_common.errors import ErrorCode, TesseraError

log = logging.getLogger(__name__)


def error_response(code: ErrorCode, reason: str) -> web.Response:
    """A JSON error body: the stable code, the standard's title and what went wrong."""
    spec = code.spec
    body = {"error": code.value, "title": spec.title, "reason": reason, "see": spec.citation}
    return web.Response(
        status=spec.http_status, body=orjson.dumps(body), content_type="application/json"
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except TesseraError as exc:
        return error_response(exc.code, exc.reason)
    except web.HTTPException:
        raise
    except BlobNotFoundError:
        # The index named an object that is gone: the instance was deleted or replaced while
        # this request read it (or a remembered location was a moment late to be dropped).
        return error_response(ErrorCode.NOT_FOUND, "the instance is no longer stored")
    except Exception:
        log.exception("unexpected error serving %s %s", request.method, request.path)
        return error_response(ErrorCode.INTERNAL, "unexpected server error; see the logs")
