"""QIDO-RS, the Search transaction (PS3.18 §10.6).

The URL is parsed once into a ``SearchRequest`` (``tessera_common.qido``); the query service
answers in pages below the bus size limit and the gateway joins them into one response.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from tessera_common.errors import ErrorCode, TesseraError
from tessera_common.messages import QueryLevel, SearchReply, SearchRequest, Subject
from tessera_common.qido import parse_search

from .context import BUS, optional_path_uid, service_root
from .negotiation import parse_accept

JSON_TYPES = ("application/dicom+json", "application/json")
RETRIEVE_URL = "00081190"
MORE_RESULTS_WARNING = (
    '299 tessera "The number of results exceeded the maximum supported by the server. '
    'Additional results can be requested."'
)


def _check_accept(request: web.Request) -> None:
    accept = parse_accept(request.headers.get("Accept"))
    for item in accept:
        if item.q > 0 and any(item.matches(*essence.split("/")) for essence in JSON_TYPES):
            return
    raise TesseraError(
        ErrorCode.NOT_ACCEPTABLE,
        "search results are available as application/dicom+json "
        "(multipart/related; type=application/dicom+xml arrives with complete QIDO)",
    )


async def _search(request: web.Request, level: QueryLevel) -> web.Response:
    _check_accept(request)
    search = parse_search(
        level,
        list(request.query.items()),
        study_uid=optional_path_uid(request, "study"),
        series_uid=optional_path_uid(request, "series"),
    )
    results, more = await collect(request, search)
    if not results:
        return web.Response(status=204)
    root = service_root(request)
    for dataset in results:
        _absolute_retrieve_url(dataset, root)
    response = web.Response(body=orjson.dumps(results), content_type="application/dicom+json")
    if more:
        response.headers["Warning"] = MORE_RESULTS_WARNING
    return response


async def collect(request: web.Request, search: SearchRequest) -> tuple[list[dict[str, Any]], bool]:
    """Ask the query service page by page until the requested window is complete."""
    bus = request.app[BUS]
    results: list[dict[str, Any]] = []
    offset, remaining = search.offset, search.limit
    while True:
        page = search.model_copy(update={"offset": offset, "limit": remaining})
        reply = await bus.request(Subject.QUERY_SEARCH, page, SearchReply)
        results.extend(reply.results)
        if reply.next_offset is None or not reply.results:
            return results, reply.more_available
        remaining -= reply.next_offset - offset
        offset = reply.next_offset
        if remaining <= 0:
            return results, reply.more_available


def _absolute_retrieve_url(dataset: dict[str, Any], root: str) -> None:
    attr = dataset.get(RETRIEVE_URL)
    if attr and attr.get("Value"):
        attr["Value"] = [f"{root}/{v}" for v in attr["Value"]]


async def search_studies(request: web.Request) -> web.Response:
    return await _search(request, QueryLevel.STUDY)


async def search_series(request: web.Request) -> web.Response:
    return await _search(request, QueryLevel.SERIES)


async def search_instances(request: web.Request) -> web.Response:
    return await _search(request, QueryLevel.INSTANCE)
