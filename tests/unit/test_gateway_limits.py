"""The gateway's pure request-limit checks (``tessera_gateway.limits``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from tessera_common.errors import ErrorCode, TesseraError
from tessera_common.settings import Settings
from tessera_gateway.limits import (
    BodyLimits,
    bounded_chunks,
    check_content_length,
    runner_limits,
)

LIMITS = BodyLimits(
    max_request_bytes=10,
    max_parts=3,
    max_part_bytes=5,
    max_part_header_bytes=64,
    idle_timeout=0.05,
)

CONTENT_LENGTHS = {
    "absent (chunked)": (None, None),
    "empty": (0, None),
    "at the limit": (10, None),
    "one byte over": (11, ErrorCode.PAYLOAD_TOO_LARGE),
}


@pytest.mark.parametrize("case", list(CONTENT_LENGTHS), ids=list(CONTENT_LENGTHS))
def test_check_content_length(case: str) -> None:
    length, expected = CONTENT_LENGTHS[case]
    if expected is None:
        check_content_length(length, LIMITS.max_request_bytes)
        return
    with pytest.raises(TesseraError) as raised:
        check_content_length(length, LIMITS.max_request_bytes)
    assert raised.value.code is expected
    assert "TESSERA_MAX_REQUEST_BYTES" in raised.value.reason


def _reader(chunks: list[bytes], stall: bool = False) -> Callable[[], Awaitable[bytes]]:
    pending = list(chunks)

    async def read() -> bytes:
        if pending:
            return pending.pop(0)
        if stall:
            await asyncio.sleep(10)
        return b""

    return read


BODIES = {
    "under the limit": (_reader([b"abcd", b"efgh"]), None),
    "exactly the limit": (_reader([b"abcde", b"fghij"]), None),
    "chunked over the limit": (_reader([b"abcdef", b"ghijk"]), ErrorCode.PAYLOAD_TOO_LARGE),
    "stalled client": (_reader([b"abc"], stall=True), ErrorCode.REQUEST_TIMEOUT),
}


@pytest.mark.parametrize("case", list(BODIES), ids=list(BODIES))
async def test_bounded_chunks(case: str) -> None:
    read, expected = BODIES[case]
    received: list[bytes] = []

    async def consume() -> None:
        async for chunk in bounded_chunks(read, LIMITS):
            received.append(chunk)

    if expected is None:
        await consume()
        assert sum(map(len, received)) <= LIMITS.max_request_bytes
        return
    with pytest.raises(TesseraError) as raised:
        await consume()
    assert raised.value.code is expected
    assert raised.value.http_status in {408, 413}


def test_runner_limits_come_from_settings() -> None:
    settings = Settings(max_request_line_bytes=1000, max_request_header_bytes=2000)
    assert runner_limits(settings) == {"max_line_size": 1000, "max_field_size": 2000}
