"""A small DICOMweb client: STOW-RS, QIDO-RS and WADO-RS over aiohttp (PS3.18 §10).

The I/O edge of the ``upload``, ``search`` and ``download`` commands; framing, response
parsing and the retry policy are pure (``client_multipart``, ``client_stow``,
``client_retry``). Only the standard's resources are used, so any DICOMweb server works.

STOW-RS bodies are streamed from the files (one chunk in memory per request) with an exact
``Content-Length``; WADO-RS responses are split into parts as they arrive.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import aiohttp

from .client_multipart import (
    MultipartParser,
    PartEvent,
    body_length,
    boundary_of,
    close_delimiter,
    new_boundary,
    part_head,
    part_separator,
    related_content_type,
)
from .client_retry import RetryPolicy, is_transient, parse_retry_after
from .client_stow import StoreResponse, error_text, parse_store_response
from .discovery import Candidate

CHUNK_BYTES = 1024 * 1024
_NETWORK_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError)
DICOM_JSON = "application/dicom+json"
Level = Literal["studies", "series", "instances"]
Progress = Callable[[int], None]
"""Told how many bytes went out (or, negative, were taken back after a failed attempt)."""


class DicomWebError(Exception):
    """A request failed for good (after retries, or with a status not worth retrying)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AuthenticationError(DicomWebError):
    """401 or 403: the credentials are missing, wrong or not enough. Never retried."""


class FileChangedError(DicomWebError):
    """A file's size changed between discovery and upload."""


class _TransientError(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def authorization_header(token: str | None) -> dict[str, str]:
    """RFC 6750 §2.1 ``Authorization: Bearer``: how Tessera's gateway takes both OIDC access
    tokens and its API keys."""
    return {"Authorization": f"Bearer {token}"} if token else {}


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    warnings: tuple[str, ...]
    body: bytes


class DicomWebClient:
    """``async with DicomWebClient(url) as client: ...``; ``url`` is the DICOMweb root."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 300.0,
        connections: int = 8,
        on_retry: Callable[[str, float], None] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._headers = authorization_header(token)
        self._retry = retry or RetryPolicy()
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=timeout)
        self._connections = connections
        self._on_retry = on_retry
        self._session: aiohttp.ClientSession | None = None
        self.retries = 0

    async def __aenter__(self) -> DicomWebClient:
        connector = aiohttp.TCPConnector(limit=self._connections)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, headers=self._headers
        )
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use the client inside 'async with'")
        return self._session

    # --- STOW-RS ------------------------------------------------------------------------------

    async def store(
        self, files: Sequence[Candidate], progress: Progress | None = None
    ) -> StoreResponse:
        """Store ``files`` in one request (PS3.18 §10.5): ``POST {root}/studies``."""
        report = progress or (lambda _: None)

        async def attempt() -> Answer:
            boundary = new_boundary()
            sent = 0

            def count(size: int) -> None:
                nonlocal sent
                sent += size
                report(size)

            headers = {
                "Content-Type": related_content_type(boundary),
                "Content-Length": str(body_length(boundary, [f.size for f in files])),
                "Accept": DICOM_JSON,
            }
            try:
                return await self._send(
                    "POST", f"{self.url}/studies", headers, _stow_body(boundary, files, count)
                )
            except BaseException:
                report(-sent)
                raise

        answer = await self._with_retries(attempt)
        content_type = answer.headers.get("Content-Type")
        return parse_store_response(answer.status, answer.body, content_type, answer.warnings)

    # --- QIDO-RS ------------------------------------------------------------------------------

    async def search(
        self,
        level: Level,
        params: Sequence[tuple[str, str]] = (),
        *,
        study: str | None = None,
        series: str | None = None,
    ) -> tuple[list[dict[str, Any]], tuple[str, ...]]:
        """QIDO-RS (PS3.18 §10.6): the matches as DICOM JSON, and the ``Warning`` texts (a
        server says there that it returned fewer results than matched)."""
        url = self.url + _scope(study, series) + f"/{level}"

        async def attempt() -> Answer:
            return await self._send("GET", url, {"Accept": DICOM_JSON}, None, params)

        answer = await self._with_retries(attempt)
        if answer.status not in (200, 204):
            raise DicomWebError(_failure_text(answer), answer.status)
        if answer.status == 204 or not answer.body.strip():
            return [], answer.warnings
        try:
            matches = json.loads(answer.body)
        except ValueError:
            matches = None
        if not isinstance(matches, list):
            raise DicomWebError("the search answer is not a DICOM JSON array", answer.status)
        return [m for m in matches if isinstance(m, dict)], answer.warnings

    # --- WADO-RS ------------------------------------------------------------------------------

    async def retrieve(
        self,
        study: str,
        series: str | None = None,
        instance: str | None = None,
        *,
        transfer_syntax: str = "*",
    ) -> AsyncIterator[PartEvent]:
        """WADO-RS (PS3.18 §10.4) of a study, series or instance as ``application/dicom``
        parts; ``transfer_syntax="*"`` asks for the bytes as stored. Retried until the
        answer starts; an answer cut short raises ``DicomWebError``."""
        url = self.url + _scope(study, series)
        if instance is not None:
            url += f"/instances/{instance}"
        accept = f'multipart/related; type="application/dicom"; transfer-syntax={transfer_syntax}'
        started = False
        for attempt_number in range(1, self._retry.attempts + 1):
            try:
                async with self.session.get(url, headers={"Accept": accept}) as response:
                    if is_transient(response.status) and self._retry.should_retry(attempt_number):
                        retry_after = parse_retry_after(response.headers.get("Retry-After"))
                        await self._pause(attempt_number, f"HTTP {response.status}", retry_after)
                        continue
                    if response.status != 200:
                        answer = await _read_answer(response)
                        _raise_for_auth(answer)
                        raise DicomWebError(_failure_text(answer), response.status)
                    parser = MultipartParser(boundary_of(response.headers.get("Content-Type", "")))
                    async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                        for event in parser.feed(chunk):
                            started = True
                            yield event
                    parser.finish()
                    return
            except (
                aiohttp.ClientConnectionError,
                aiohttp.ClientPayloadError,
                TimeoutError,
            ) as error:
                if started or not self._retry.should_retry(attempt_number):
                    raise DicomWebError(f"{url}: {_describe_error(error)}") from error
                await self._pause(attempt_number, _describe_error(error), None)

    # --- plumbing -----------------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: AsyncIterator[bytes] | None,
        params: Sequence[tuple[str, str]] = (),
    ) -> Answer:
        try:
            async with self.session.request(
                method, url, headers=dict(headers), data=body, params=list(params)
            ) as response:
                answer = await _read_answer(response)
        except (aiohttp.ClientConnectionError, TimeoutError) as error:
            raise _TransientError(_describe_error(error)) from error
        if is_transient(answer.status):
            raise _TransientError(
                _failure_text(answer), parse_retry_after(answer.headers.get("Retry-After"))
            )
        _raise_for_auth(answer)
        return answer

    async def _with_retries(self, attempt: Callable[[], Awaitable[Answer]]) -> Answer:
        for number in range(1, self._retry.attempts + 1):
            try:
                return await attempt()
            except _TransientError as error:
                if not self._retry.should_retry(number):
                    raise DicomWebError(
                        f"{error} (gave up after {number} attempts)", None
                    ) from error
                await self._pause(number, str(error), error.retry_after)
        raise AssertionError("unreachable")

    async def _pause(self, attempt: int, why: str, retry_after: float | None) -> None:
        delay = self._retry.delay(attempt, retry_after, random.random())  # noqa: S311
        self.retries += 1
        if self._on_retry is not None:
            self._on_retry(why, delay)
        await asyncio.sleep(delay)


async def _stow_body(
    boundary: str, files: Sequence[Candidate], count: Progress
) -> AsyncIterator[bytes]:
    """The multipart body, read from the files a chunk at a time, off the event loop."""
    for index, candidate in enumerate(files):
        yield part_head(boundary) if index == 0 else part_separator(boundary)
        file = await asyncio.to_thread(candidate.path.open, "rb")
        read = 0
        try:
            while chunk := await asyncio.to_thread(file.read, CHUNK_BYTES):
                read += len(chunk)
                if read > candidate.size:
                    break
                yield chunk
                count(len(chunk))
        finally:
            await asyncio.to_thread(file.close)
        if read != candidate.size:
            raise FileChangedError(f"{candidate.path} changed while being uploaded")
    yield close_delimiter(boundary)


async def _read_answer(response: aiohttp.ClientResponse) -> Answer:
    return Answer(
        status=response.status,
        headers=response.headers,
        warnings=tuple(response.headers.getall("Warning", [])),
        body=await response.read(),
    )


def _raise_for_auth(answer: Answer) -> None:
    if answer.status in (401, 403):
        raise AuthenticationError(_failure_text(answer), answer.status)


def _failure_text(answer: Answer) -> str:
    return error_text(answer.status, answer.body)


def _describe_error(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timed out"
    return str(error) or type(error).__name__


def _scope(study: str | None, series: str | None) -> str:
    if series is not None and study is None:
        raise ValueError("a series is found within a study")
    path = f"/studies/{study}" if study else ""
    return path + (f"/series/{series}" if series else "")
