"""WADO-RS metadata (PS3.18 §10.4.1.1.2): study, series and instance ``/metadata``.

``application/dicom+json`` is the instance JSON the store computed at ingest (precomputed,
served by ``query.metadata``), joined into one array, with the BulkDataURIs (stored relative
to the service root) made absolute. ``multipart/related; type="application/dicom+xml"`` has
one Native DICOM Model document per instance (PS3.19 Annex A.1, ``dicom_xml``).

Study and series documents are cached in object storage (``cache/metadata/…``), keyed by a
digest of what they are made of: the service root and, for every instance in retrieve order,
its SOP Instance UID and the SHA-256 of its stored bytes (``query.contents`` computes that
part from the index alone, without listing the instances). A stored,
replaced or removed instance changes the digest, so a cached document is never stale, and the
digest is the strong ``ETag``: ``If-None-Match`` gets 304 without reading the document. The
plain and gzip forms are both cached (RFC 9110 §8.4: ``Content-Encoding: gzip`` when the
client accepts it, ``Vary: Accept-Encoding``); the most recently served documents also stay in
a bounded in-memory cache. A series document the query service built ahead (root-relative,
``tessera_query.documents``) is served with this root's BulkDataURIs and cached as this root's;
otherwise the first request after a change builds the document while streaming it (spooled to
disk beyond a few MiB) and stores it afterwards, in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import zlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass
from typing import IO, Any

import orjson
from aiohttp import web

from tessera_common.blobstore import BlobNotFoundError, BlobStore
from tessera_common.errors import ErrorCode, TesseraError
from tessera_common.layout import (
    RELATIVE_ROOT,
    metadata_document_digest,
    metadata_document_key,
)
from tessera_common.messages import ContentsReply, MetadataPage, MetadataRequest, Subject

from .ahead import prefetched
from .context import BLOBS, BUS, optional_path_uid, path_uid, service_root
from .dicom_xml import to_xml
from .instances import MultipartWriter, accept_items, locate_request
from .negotiation import AcceptItem, parse_accept, quality

JSON_TYPES = ("application/dicom+json", "application/json")
XML_TYPE = "application/dicom+xml"
BULKDATA_KEY = b'"BulkDataURI":"'
_SPOOL_BYTES = 8 * 1024 * 1024
#: Level 1: half the time of level 4 on DICOM JSON for a document about 12 % larger (it is
#: still about a seventh of the plain one), and a first request waits for the compression.
_GZIP_LEVEL = 1
_MEMORY_CACHE_BYTES = 128 * 1024 * 1024
_COMPRESS_INLINE_BYTES = 64 * 1024

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Form:
    xml: bool
    gzip: bool


class DocumentCache:
    """Recently served metadata documents, by cache key, within a byte budget."""

    def __init__(self, budget: int = _MEMORY_CACHE_BYTES) -> None:
        self._budget = budget
        self._used = 0
        self._entries: OrderedDict[str, bytes] = OrderedDict()

    def get(self, key: str) -> bytes | None:
        data = self._entries.get(key)
        if data is not None:
            self._entries.move_to_end(key)
        return data

    def put(self, key: str, data: bytes) -> None:
        if len(data) > self._budget // 4 or key in self._entries:
            return
        self._entries[key] = data
        self._used += len(data)
        while self._used > self._budget:
            _, dropped = self._entries.popitem(last=False)
            self._used -= len(dropped)


DOCUMENTS = web.AppKey("metadata_documents", DocumentCache)


class Background(set[asyncio.Task[None]]):
    """Cache uploads under way (kept referenced until done)."""


BACKGROUND = web.AppKey("metadata_background", Background)


def negotiate(request: web.Request) -> Form:
    accept = accept_items(request)
    json_q = max(quality(accept, essence) for essence in JSON_TYPES)
    xml_q = max(quality(accept, XML_TYPE), _multipart_xml_quality(accept))
    if json_q <= 0 and xml_q <= 0:
        raise TesseraError(
            ErrorCode.NOT_ACCEPTABLE,
            "metadata is available as application/dicom+json and as multipart/related; "
            'type="application/dicom+xml"',
        )
    return Form(xml=xml_q > json_q, gzip=accepts_gzip(request.headers.get("Accept-Encoding")))


def _multipart_xml_quality(accept: Sequence[AcceptItem]) -> float:
    best = 0.0
    for item in accept:
        media = item.media_type
        multipart = media.type == "multipart" and media.subtype in ("related", "*")
        if multipart and media.params.get("type", "").lower() == XML_TYPE:
            best = max(best, item.q)
    return best


def accepts_gzip(header: str | None) -> bool:
    """Whether ``Accept-Encoding`` allows gzip (RFC 9110 §12.5.3)."""
    if not header:
        return False
    weights: dict[str, float] = {}
    for item in header.split(","):
        name, _, params = item.strip().partition(";")
        q = 1.0
        params = params.strip().replace(" ", "")
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                q = 0.0
        weights[name.strip().lower()] = q
    return weights.get("gzip", weights.get("x-gzip", weights.get("*", 0.0))) > 0


def digest(root: str, contents: ContentsReply) -> str:
    """What a study or series document is made of (see the module docstring)."""
    return metadata_document_digest(root, contents.digest)


async def _contents(request: web.Request) -> ContentsReply:
    return await request.app[BUS].request(
        Subject.QUERY_CONTENTS, locate_request(request), ContentsReply
    )


def etag(document_digest: str, *, gzip: bool) -> str:
    return f'"{document_digest[:40]}{"-gzip" if gzip else ""}"'


def not_modified(request: web.Request, tag: str) -> bool:
    """``If-None-Match`` (RFC 9110 §13.1.2; weak comparison)."""
    header = request.headers.get("If-None-Match")
    if not header:
        return False
    tags = {t.strip().removeprefix("W/") for t in header.split(",")}
    return "*" in tags or tag in tags


async def metadata(request: web.Request) -> web.StreamResponse:
    """Study, series or instance ``/metadata``."""
    form = negotiate(request)
    if form.xml:
        return await _xml(request)
    root = service_root(request)
    contents = await _contents(request)
    document_digest = digest(root, contents)
    tag = etag(document_digest, gzip=form.gzip)
    headers = {
        "ETag": tag,
        "Vary": "Accept, Accept-Encoding",
        "Cache-Control": "no-cache",
    }
    if not_modified(request, tag):
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = "application/dicom+json"
    if form.gzip:
        headers["Content-Encoding"] = "gzip"
    if "instance" in request.match_info:
        body = await _joined(request, root)
        if form.gzip:
            body = await _compress(body)
        return web.Response(body=body, headers=headers)
    key = _cache_key(request, document_digest)
    cached = await _cached(request, key + (".json.gz" if form.gzip else ".json"))
    if cached is not None:
        return web.Response(body=cached, headers=headers)
    prebuilt = await _prebuilt(request, root, contents)
    if prebuilt is not None:
        # Kept under this root's key: in memory at once, in the cache in the background.
        compressed = await _compress(prebuilt) if form.gzip else None
        request.app[DOCUMENTS].put(key + ".json", prebuilt)
        _in_background(request, _store(request.app[BLOBS], key, prebuilt, compressed))
        body = prebuilt if compressed is None else compressed
        return web.Response(body=body, headers=headers)
    return await _build(request, root, key, contents, form, headers)


async def _prebuilt(request: web.Request, root: str, contents: ContentsReply) -> bytes | None:
    """The series document the query service built ahead (``tessera_query.documents``), with
    this root's BulkDataURIs."""
    series = optional_path_uid(request, "series")
    if series is None:
        return None
    relative_digest = metadata_document_digest(RELATIVE_ROOT, contents.digest)
    relative_key = metadata_document_key(path_uid(request, "study"), series, relative_digest)
    try:
        relative = await request.app[BLOBS].get(relative_key + ".json")
    except BlobNotFoundError:
        return None
    bulk_prefix = BULKDATA_KEY + root.encode() + b"/"
    if len(relative) > _COMPRESS_INLINE_BYTES:
        document = await asyncio.to_thread(_absolute, relative, bulk_prefix)
    else:
        document = _absolute(relative, bulk_prefix)
    return document


def _cache_key(request: web.Request, document_digest: str) -> str:
    return metadata_document_key(
        path_uid(request, "study"), optional_path_uid(request, "series"), document_digest
    )


async def _cached(request: web.Request, key: str) -> bytes | None:
    memory = request.app[DOCUMENTS]
    data = memory.get(key)
    if data is not None:
        return data
    try:
        data = await request.app[BLOBS].get(key)
    except BlobNotFoundError:
        return None
    memory.put(key, data)
    return data


async def _pages(request: web.Request) -> AsyncIterator[tuple[MetadataPage, bytes]]:
    """Each page: its ``MetadataPage`` and its documents, comma-joined (``count`` of them)."""
    bus = request.app[BUS]
    ask = MetadataRequest(
        study_uid=path_uid(request, "study"),
        series_uid=optional_path_uid(request, "series"),
        sop_uid=optional_path_uid(request, "instance"),
    )
    while True:
        page, documents = await bus.request_with_payload(Subject.QUERY_METADATA, ask, MetadataPage)
        yield page, documents
        if page.next_offset is None:
            return
        ask = ask.model_copy(update={"offset": page.next_offset})


def _absolute(documents: bytes, bulk_prefix: bytes) -> bytes:
    return documents.replace(BULKDATA_KEY, bulk_prefix)


async def _joined(request: web.Request, root: str) -> bytes:
    bulk_prefix = BULKDATA_KEY + root.encode() + b"/"
    pages = [
        _absolute(documents, bulk_prefix) async for page, documents in _pages(request) if page.count
    ]
    return b"[" + b",".join(pages) + b"]"


async def _compress(data: bytes) -> bytes:
    if len(data) <= _COMPRESS_INLINE_BYTES:
        return _gzip(data)
    return await asyncio.to_thread(_gzip, data)


def _gzip(data: bytes) -> bytes:
    compressor = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, 31)
    return compressor.compress(data) + compressor.flush()


async def _build(
    request: web.Request,
    root: str,
    key: str,
    contents: ContentsReply,
    form: Form,
    headers: dict[str, str],
) -> web.StreamResponse:
    """Stream the document while spooling both forms, then cache them if the contents did not
    change while the pages were read (an instance stored or removed in between would make the
    document disagree with its digest: then it is served but not cached)."""
    response = web.StreamResponse(headers=headers)
    response.enable_chunked_encoding()
    await response.prepare(request)
    bulk_prefix = BULKDATA_KEY + root.encode() + b"/"
    plain = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115
    # Compressed while streaming only for a client that takes gzip; otherwise afterwards, in
    # the background, for the cache.
    packed = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) if form.gzip else None  # noqa: SIM115
    compressor = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, 31)
    documents = 0
    keep = False
    try:
        separator = b"["
        # The next page is asked for while this one is written.
        async for page, joined in prefetched(_pages(request)):
            if not page.count:
                continue
            chunk = separator + _absolute(joined, bulk_prefix)
            documents += page.count
            separator = b","
            plain.write(chunk)
            if packed is not None:
                gz = await asyncio.to_thread(compressor.compress, chunk)
                packed.write(gz)
                await response.write(gz)
            else:
                await response.write(chunk)
        tail = b"[]" if separator == b"[" else b"]"
        plain.write(tail)
        if packed is not None:
            gz_tail = compressor.compress(tail) + compressor.flush()
            packed.write(gz_tail)
            await response.write(gz_tail)
        else:
            await response.write(tail)
        await response.write_eof()
        keep = documents == contents.count and (await _contents(request)) == contents
    finally:
        if keep:
            _in_background(request, _store_spooled(request.app[BLOBS], key, plain, packed))
        else:
            plain.close()
            if packed is not None:
                packed.close()
    return response


def _in_background(request: web.Request, work: Coroutine[Any, Any, None]) -> None:
    task = asyncio.create_task(work)
    background = request.app[BACKGROUND]
    background.add(task)
    task.add_done_callback(background.discard)


async def _store_spooled(
    blobs: BlobStore, key: str, plain: IO[bytes], packed: IO[bytes] | None
) -> None:
    try:
        plain.seek(0)
        document = await asyncio.to_thread(plain.read)
        compressed = None
        if packed is not None:
            packed.seek(0)
            compressed = await asyncio.to_thread(packed.read)
    finally:
        plain.close()
        if packed is not None:
            packed.close()
    await _store(blobs, key, document, compressed)


async def _store(blobs: BlobStore, key: str, document: bytes, compressed: bytes | None) -> None:
    """Cache both forms (compressing the plain one here if the request did not), then remove
    the documents this one replaces."""
    try:
        await blobs.put(key + ".json", document)
        if compressed is None:
            compressed = await asyncio.to_thread(_gzip, document)
        await blobs.put(key + ".json.gz", compressed)
        prefix = key.rsplit("/", 1)[0] + "/"
        async for info in blobs.list(prefix):
            if not info.key.startswith(key + "."):
                await blobs.delete(info.key)
    except Exception:
        log.exception("caching a metadata document failed")


async def _xml(request: web.Request) -> web.StreamResponse:
    """One Native DICOM Model document per instance (PS3.19 Annex A.1)."""
    root = service_root(request)
    bulk_prefix = BULKDATA_KEY + root.encode() + b"/"
    pages = _pages(request)
    first = await anext(pages)
    response = web.StreamResponse()
    writer = MultipartWriter(response)
    response.headers["Content-Type"] = writer.content_type(XML_TYPE, writer.boundary)
    response.enable_chunked_encoding()
    await response.prepare(request)

    def render(documents: bytes) -> list[bytes]:
        parsed = orjson.loads(b"[" + _absolute(documents, bulk_prefix) + b"]")
        return [to_xml(document) for document in parsed]

    page: tuple[MetadataPage, bytes] | None = first
    while page is not None:
        for xml in await asyncio.to_thread(render, page[1]):
            await writer.part([("Content-Type", f"{XML_TYPE}; charset=utf-8")], xml)
        page = await anext(pages, None)
    await writer.close()
    return response


async def cancel_background(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx``: the in-memory cache and the uploads still under way."""
    app[DOCUMENTS] = DocumentCache()
    app[BACKGROUND] = Background()
    yield
    background: Background = app[BACKGROUND]
    for task in list(background):
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, 10)


__all__ = ["accepts_gzip", "digest", "metadata", "negotiate", "parse_accept"]
