"""QIDO-RS, the Search transaction (PS3.18 §10.6).

The URL is parsed once into a ``SearchRequest`` (``tessera_common.qido``); the query service
answers in pages below the bus size limit and the gateway streams them out as they arrive, so
a large result never sits whole in memory (ARCHITECTURE invariant 5):

- ``application/dicom+json`` (PS3.18 §8.7.3.4, Annex F): one JSON array;
- ``multipart/related; type="application/dicom+xml"``: one Native DICOM Model document
  (PS3.19 Annex A.1) per result.

Status codes (PS3.18 §10.6.3.1 Table 10.6.3-1): 200 with results; 204 when nothing matches;
400 for a malformed query (unknown attribute, bad value, impossible range, bad limit/offset);
406 when no acceptable representation; 413 when the search is too broad to finish.
When results exist beyond the page, a ``Warning: 299`` header says so (PS3.18 §8.3.4.4).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import web

from tessera_common.errors import ErrorCode, TesseraError
from tessera_common.messages import QueryLevel, SearchReply, SearchRequest, Subject
from tessera_common.qido import parse_search

from .context import BUS, optional_path_uid, service_root
from .dicom_xml import to_xml
from .negotiation import AcceptItem, parse_accept, quality

JSON_TYPES = ("application/dicom+json", "application/json")
XML_TYPE = "application/dicom+xml"
RETRIEVE_URL = "00081190"
MORE_RESULTS_WARNING = (
    '299 tessera "The number of results exceeded the maximum supported by the server. '
    'Additional results can be requested."'
)


def _multipart_xml_quality(accept: list[AcceptItem]) -> float:
    """The weight of ``multipart/related; type="application/dicom+xml"``: an explicit
    ``multipart/related`` (or ``multipart/*``) range whose ``type``, if given, is DICOM XML."""
    best = 0.0
    for item in accept:
        media = item.media_type
        if media.type != "multipart" or media.subtype not in ("related", "*"):
            continue
        wanted = media.params.get("type", XML_TYPE).lower()
        if wanted == XML_TYPE:
            best = max(best, item.q)
    return best


def representation(accept_header: str | None) -> str:
    """``json`` or ``xml``: the search result representation the client prefers; JSON wins
    ties (and ``*/*``). A bare ``application/dicom+xml`` is answered as the multipart form,
    the only XML form QIDO-RS defines (PS3.18 §10.6.3.2)."""
    accept = parse_accept(accept_header)
    json_q = max(quality(accept, essence) for essence in JSON_TYPES)
    xml_q = max(quality(accept, XML_TYPE), _multipart_xml_quality(accept))
    if json_q <= 0 and xml_q <= 0:
        raise TesseraError(
            ErrorCode.NOT_ACCEPTABLE,
            "search results are available as application/dicom+json and as "
            'multipart/related; type="application/dicom+xml"',
        )
    return "json" if json_q >= xml_q else "xml"


async def _search(request: web.Request, level: QueryLevel) -> web.StreamResponse:
    accept = request.query.get("accept") or request.headers.get("Accept")
    form = representation(accept)
    search = parse_search(
        level,
        list(request.query.items()),
        study_uid=optional_path_uid(request, "study"),
        series_uid=optional_path_uid(request, "series"),
    )
    pages = search_pages(request, search)
    first = await anext(pages, None)
    if first is None or not first.results:
        return web.Response(status=204)
    boundary = uuid.uuid4().hex
    content_type = (
        "application/dicom+json"
        if form == "json"
        else f'multipart/related; type="{XML_TYPE}"; boundary={boundary}'
    )
    response = web.StreamResponse(status=200, headers={"Content-Type": content_type})
    if first.more_available:
        response.headers["Warning"] = MORE_RESULTS_WARNING
    response.enable_chunked_encoding()
    await response.prepare(request)
    root = service_root(request)
    written = 0
    page: SearchReply | None = first
    while page is not None:
        for dataset in page.results:
            _absolute_retrieve_url(dataset, root)
        if form == "json":
            body = b",".join(orjson.dumps(result) for result in page.results)
            await response.write((b"[" if written == 0 else b",") + body)
        else:
            await response.write(await asyncio.to_thread(_xml_parts, page.results, boundary))
        written += len(page.results)
        page = await anext(pages, None)
    await response.write(b"]" if form == "json" else f"--{boundary}--\r\n".encode())
    await response.write_eof()
    return response


def _xml_parts(results: list[dict[str, Any]], boundary: str) -> bytes:
    head = f"--{boundary}\r\nContent-Type: {XML_TYPE}\r\n\r\n".encode()
    return b"".join(head + to_xml(result) + b"\r\n" for result in results)


async def search_pages(request: web.Request, search: SearchRequest) -> AsyncIterator[SearchReply]:
    """Ask the query service page by page until the requested window is complete."""
    bus = request.app[BUS]
    offset, remaining = search.offset, search.limit
    while True:
        page = search.model_copy(update={"offset": offset, "limit": remaining})
        reply = await bus.request(Subject.QUERY_SEARCH, page, SearchReply)
        yield reply
        if reply.next_offset is None or not reply.results:
            return
        remaining -= reply.next_offset - offset
        offset = reply.next_offset
        if remaining <= 0:
            return


def _absolute_retrieve_url(dataset: dict[str, Any], root: str) -> None:
    attr = dataset.get(RETRIEVE_URL)
    if attr and attr.get("Value"):
        attr["Value"] = [f"{root}/{v}" for v in attr["Value"]]


async def search_studies(request: web.Request) -> web.StreamResponse:
    return await _search(request, QueryLevel.STUDY)


async def search_series(request: web.Request) -> web.StreamResponse:
    return await _search(request, QueryLevel.SERIES)


async def search_instances(request: web.Request) -> web.StreamResponse:
    return await _search(request, QueryLevel.INSTANCE)
