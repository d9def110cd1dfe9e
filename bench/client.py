"""HTTP mechanics: the servers under test, timed requests and a bounded load generator.

One ``aiohttp`` session per server (keep-alive, no compression so that neither server spends CPU
on gzip), every request with a timeout. A 4xx/5xx answer raises ``Unsupported`` with the status
and the server's reason: the scenario is then reported unsupported, never as zero.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

#: A request that takes longer than this counts as failed (the large STOW passes its own).
REQUEST_TIMEOUT = 120.0
#: Headers of every request: no compression, a name in the server's logs.
COMMON_HEADERS = {"Accept-Encoding": "identity", "User-Agent": "tessera-bench/1"}
READ_CHUNK = 1 << 20


class Unsupported(Exception):  # noqa: N818 - reads as the scenario's status
    """The server answered 4xx/5xx: the scenario is unsupported there."""

    def __init__(self, status: int | None, reason: str):
        reason = reason.removeprefix(f"{status}: ") if status else reason
        super().__init__(f"{status}: {reason}" if status else reason)
        self.status = status
        self.reason = reason


class Failed(Exception):  # noqa: N818 - reads as the scenario's status
    """No HTTP answer: connection refused or reset, or a timeout."""


@dataclass(frozen=True)
class Target:
    """A server under test: ``key`` is "A" or "B", ``url`` its DICOMweb root."""

    key: str
    url: str
    label: str
    #: root of the server's process tree, for peak RSS (embedded Tessera, or a given peer pid)
    pid: int | None = None


@dataclass(frozen=True)
class Reply:
    status: int
    #: bytes of the answer's body (or, for a STOW, of the instances sent)
    size: int
    seconds: float
    body: bytes = b""


def open_session(connections: int = 32) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections),
        headers=COMMON_HEADERS,
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
    )


def reason_of(body: bytes, headers: Any) -> str:
    """The server's own words: Tessera's ``reason``, Orthanc's ``Message``, else the text."""
    warning = headers.get("Warning", "") if headers is not None else ""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        for key in ("reason", "Details", "Message", "title", "error"):
            if isinstance(parsed.get(key), str) and parsed[key]:
                return str(parsed[key])[:300]
    text = body.decode("utf-8", "replace").strip().splitlines()
    return (text[0] if text else warning or "no reason given")[:300]


async def call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    params: list[tuple[str, str]] | None = None,
    data: Any = None,
    keep_body: bool = False,
    timeout: float = REQUEST_TIMEOUT,
) -> Reply:
    """Send one request and read the whole answer; the time includes the last byte."""
    started = time.perf_counter()
    try:
        async with session.request(
            method,
            url,
            headers=headers,
            params=params,
            data=data,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as response:
            if response.status >= 400:
                body = await response.read()
                raise Unsupported(response.status, reason_of(body, response.headers))
            size = 0
            chunks: list[bytes] = []
            async for chunk in response.content.iter_chunked(READ_CHUNK):
                size += len(chunk)
                if keep_body:
                    chunks.append(chunk)
            return Reply(response.status, size, time.perf_counter() - started, b"".join(chunks))
    except (aiohttp.ClientError, TimeoutError) as error:
        raise Failed(f"{method} {url.split('?')[0]}: {type(error).__name__}: {error}") from None


@dataclass
class Load:
    """What a bounded load run measured."""

    seconds: float = 0.0
    requests: int = 0
    bytes: int = 0
    latencies: list[float] = field(default_factory=list)
    #: True when the time budget stopped the run before ``count`` requests
    truncated: bool = False


async def run_load(
    job: Callable[[int], Awaitable[Reply]],
    *,
    count: int,
    concurrency: int,
    budget: float,
    on_reply: Callable[[Reply], None] | None = None,
) -> Load:
    """Run ``job(0) … job(count - 1)`` with ``concurrency`` workers, stopping early once
    ``budget`` seconds have passed. The first exception stops every worker and is raised."""
    load = Load()
    indexes = iter(range(count))
    started = time.perf_counter()
    deadline = started + budget

    async def worker() -> None:
        for index in indexes:
            if time.perf_counter() > deadline:
                load.truncated = True
                return
            reply = await job(index)
            load.requests += 1
            load.bytes += reply.size
            load.latencies.append(reply.seconds)
            if on_reply is not None:
                on_reply(reply)

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(concurrency, count)):
                group.create_task(worker())
    except BaseExceptionGroup as errors:
        raise errors.exceptions[0] from None
    load.seconds = time.perf_counter() - started
    return load
