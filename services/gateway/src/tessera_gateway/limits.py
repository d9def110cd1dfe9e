"""Request limits of the gateway: body size, part count, idle time (PS3.18 §8.5; RFC 9110).

Pure checks that turn a limit crossed into a ``TesseraError`` whose reason names the limit and
the setting that raises it, so a client (or its operator) knows what to change. Part-level limits
(``max_part_bytes``) stay per-instance failures in ``stow.py``: one oversized part never aborts
the others. The HTTP parser's own limits (request line, header field) are applied by aiohttp and
answered with a 4xx before any handler runs (``runner_limits``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tessera_common.errors import ErrorCode, TesseraError
from tessera_common.settings import Settings


@dataclass(frozen=True, slots=True)
class BodyLimits:
    """The limits one STOW request body is held to."""

    max_request_bytes: int
    max_parts: int
    max_part_bytes: int
    max_part_header_bytes: int
    idle_timeout: float

    @classmethod
    def from_settings(cls, settings: Settings) -> BodyLimits:
        return cls(
            max_request_bytes=settings.max_request_bytes,
            max_parts=settings.max_parts,
            max_part_bytes=settings.max_part_bytes,
            max_part_header_bytes=settings.max_part_header_bytes,
            idle_timeout=settings.request_idle_timeout,
        )


def request_too_large(max_bytes: int) -> TesseraError:
    return TesseraError(
        ErrorCode.PAYLOAD_TOO_LARGE,
        f"the request body is larger than the {max_bytes} byte limit "
        "(TESSERA_MAX_REQUEST_BYTES); split the study into several requests",
    )


def check_content_length(content_length: int | None, max_bytes: int) -> None:
    """Refuse a declared body over the limit before reading a byte of it (RFC 9110 §15.5.14)."""
    if content_length is not None and content_length > max_bytes:
        raise request_too_large(max_bytes)


def too_many_parts(max_parts: int) -> TesseraError:
    return TesseraError(
        ErrorCode.PAYLOAD_TOO_LARGE,
        f"more than {max_parts} parts in one request (TESSERA_MAX_PARTS); "
        "split the study into several requests",
    )


def idle_timeout(seconds: float) -> TesseraError:
    return TesseraError(
        ErrorCode.REQUEST_TIMEOUT,
        f"the client sent nothing for {seconds:g} s (TESSERA_REQUEST_IDLE_TIMEOUT); "
        "the request was aborted and nothing was stored",
    )


async def bounded_chunks(
    read: Callable[[], Awaitable[bytes]], limits: BodyLimits
) -> AsyncIterator[bytes]:
    """The body's chunks from ``read`` (``b""`` at its end), counting bytes as they arrive.

    Raises 413 as soon as the count passes ``max_request_bytes`` (a chunked body declares no
    length) and 408 when one read waits longer than ``idle_timeout`` (a stalled client).
    """
    total = 0
    while True:
        try:
            async with asyncio.timeout(limits.idle_timeout):
                chunk = await read()
        except TimeoutError:
            raise idle_timeout(limits.idle_timeout) from None
        if not chunk:
            return
        total += len(chunk)
        if total > limits.max_request_bytes:
            raise request_too_large(limits.max_request_bytes)
        yield chunk


def runner_limits(settings: Settings) -> dict[str, Any]:
    """aiohttp's HTTP parser limits, passed to ``web.AppRunner`` (request handler arguments).

    A request line or a header field beyond them is answered by aiohttp itself with a 4xx.
    """
    return {
        "max_line_size": settings.max_request_line_bytes,
        "max_field_size": settings.max_request_header_bytes,
    }
