"""Spans around object-store and index calls, so a trace shows where a request spent its time.

One STOW then reads, in a trace UI::

    POST /dicom-web/studies                     gateway  SERVER
    └─ tessera.v1.store.ingest                  gateway  CLIENT
       └─ tessera.v1.store.ingest               store    SERVER
          ├─ blob.open_reader                   store    CLIENT  (header read by ranges)
          ├─ blob.rename, blob.put              store    CLIENT  (place, sidecar)
          ├─ tessera.v1.events.instance.stored  store    PRODUCER
          └─ tessera.v1.query.index             store    CLIENT
             └─ tessera.v1.query.index          query    SERVER
                └─ index.upsert                 query    CLIENT

``TracedBlobStore`` implements the ``BlobStore`` port over any other; ``traced_index`` wraps
an index (whose port lives in the query service: ``libs/common`` never imports a service).
Both open CLIENT spans, the OpenTelemetry kind for a call to a remote store.

What a span carries (ARCHITECTURE invariant 10: no PHI in traces): the operation, the backend
(``s3``, ``local``, ``sqlite``, ``mongodb``), the first segment of the object key (``studies``,
``incoming``, ``derived`` …: keys hold UIDs, which some sites derive from patient data, so the
rest of the key is left out), byte counts and the error *type*. Never an index query (QIDO-RS
carries patient names and birth dates), never an exception message.

Readiness probes (``ping``) are not traced, as the gateway does not trace ``/readyz``: a
probe every few seconds would bury the traces worth reading.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from types import TracebackType
from typing import IO, Any, TypeVar, cast

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from .blobstore import BlobInfo, BlobStore

T = TypeVar("T")

TRACER = "tessera.storage"
#: One (proxy) tracer for the module: ``trace.get_tracer`` builds a new tracer on every call.
_TRACER = trace.get_tracer(TRACER)

BLOB_BACKEND = "tessera.blob.backend"
BLOB_KEY_PREFIX = "tessera.blob.key_prefix"
BLOB_BYTES = "tessera.blob.bytes"
BLOB_FOUND = "tessera.blob.found"
DB_SYSTEM = "db.system.name"
DB_OPERATION = "db.operation.name"
ERROR_TYPE = "error.type"

UNTRACED = frozenset({"ping"})
"""Calls that never get a span: readiness probes."""


def key_prefix(key: str) -> str:
    """The first segment of an object key: a small, fixed set of names, never a UID."""
    head, _, _ = key.partition("/")
    return head if head and not head[0].isdigit() else "-"


def _failed(span: Span, error: BaseException) -> None:
    """Mark ``span`` failed by the error's type alone: exception messages may quote data."""
    span.set_attribute(ERROR_TYPE, type(error).__name__)
    span.set_status(Status(StatusCode.ERROR, type(error).__name__))


@contextmanager
def client_span(name: str, attributes: Mapping[str, str | int | bool]) -> Iterator[Span]:
    """A CLIENT span around one call, current while the call runs; failures recorded by type."""
    with _TRACER.start_as_current_span(
        name,
        kind=SpanKind.CLIENT,
        attributes=dict(attributes),
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except BaseException as error:
            _failed(span, error)
            raise


class TracedBlobStore:
    """A ``BlobStore`` that opens a CLIENT span ``blob.<operation>`` around every call to
    ``blobs``. Streams and readers get one span for their whole life: it ends when the stream
    is exhausted or closed, and counts the bytes that went through."""

    def __init__(self, blobs: BlobStore, *, backend: str) -> None:
        self._blobs = blobs
        self._backend = backend

    @property
    def inner(self) -> BlobStore:
        return self._blobs

    def _attributes(self, key: str, **extra: str | int | bool) -> dict[str, str | int | bool]:
        return {BLOB_BACKEND: self._backend, BLOB_KEY_PREFIX: key_prefix(key), **extra}

    async def put(self, key: str, data: bytes) -> None:
        with client_span("blob.put", self._attributes(key, **{BLOB_BYTES: len(data)})):
            await self._blobs.put(key, data)

    async def put_stream(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        with client_span("blob.put_stream", self._attributes(key)) as span:
            size = await self._blobs.put_stream(key, chunks)
            span.set_attribute(BLOB_BYTES, size)
            return size

    async def get(self, key: str) -> bytes:
        with client_span("blob.get", self._attributes(key)) as span:
            data = await self._blobs.get(key)
            span.set_attribute(BLOB_BYTES, len(data))
            return data

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        with client_span("blob.get_range", self._attributes(key)) as span:
            data = await self._blobs.get_range(key, start, end)
            span.set_attribute(BLOB_BYTES, len(data))
            return data

    async def stream(
        self, key: str, start: int | None = None, end: int | None = None
    ) -> AsyncIterator[bytes]:
        # Not made current: a span attached across ``yield`` would leak into the consumer.
        span = _TRACER.start_span(
            "blob.stream", kind=SpanKind.CLIENT, attributes=self._attributes(key)
        )
        total = 0
        try:
            async for chunk in self._blobs.stream(key, start, end):
                total += len(chunk)
                yield chunk
        except BaseException as error:
            _failed(span, error)
            raise
        finally:
            span.set_attribute(BLOB_BYTES, total)
            span.end()

    async def head(self, key: str) -> BlobInfo | None:
        with client_span("blob.head", self._attributes(key)) as span:
            info = await self._blobs.head(key)
            span.set_attribute(BLOB_FOUND, info is not None)
            if info is not None:
                span.set_attribute(BLOB_BYTES, info.size)
            return info

    async def rename(self, src: str, dst: str) -> None:
        attributes = self._attributes(dst, **{"tessera.blob.source_prefix": key_prefix(src)})
        with client_span("blob.rename", attributes):
            await self._blobs.rename(src, dst)

    async def delete(self, key: str) -> None:
        with client_span("blob.delete", self._attributes(key)):
            await self._blobs.delete(key)

    async def list(self, prefix: str) -> AsyncIterator[BlobInfo]:
        span = _TRACER.start_span(
            "blob.list", kind=SpanKind.CLIENT, attributes=self._attributes(prefix)
        )
        count = 0
        try:
            async for info in self._blobs.list(prefix):
                count += 1
                yield info
        except BaseException as error:
            _failed(span, error)
            raise
        finally:
            span.set_attribute("tessera.blob.objects", count)
            span.end()

    def open_reader(self, key: str, size: int | None = None) -> IO[bytes]:
        span = _TRACER.start_span(
            "blob.open_reader", kind=SpanKind.CLIENT, attributes=self._attributes(key)
        )
        try:
            reader = self._blobs.open_reader(key, size)
        except BaseException as error:
            _failed(span, error)
            span.end()
            raise
        return cast(IO[bytes], _TracedReader(reader, span))

    async def ping(self) -> None:
        await self._blobs.ping()


class _TracedReader:
    """A reader whose span ends when it is closed, counting reads and the bytes returned."""

    def __init__(self, reader: IO[bytes], span: Span) -> None:
        self._reader = reader
        self._span = span
        self._bytes = 0
        self._reads = 0

    def read(self, size: int | None = -1) -> bytes:
        try:
            data = self._reader.read(-1 if size is None else size)
        except BaseException as error:
            _failed(self._span, error)
            raise
        self._reads += 1
        self._bytes += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._reader.seek(offset, whence)

    def tell(self) -> int:
        return self._reader.tell()

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return self._reader.closed

    def close(self) -> None:
        if self._reader.closed:
            return
        try:
            self._reader.close()
        finally:
            self._span.set_attribute(BLOB_BYTES, self._bytes)
            self._span.set_attribute("tessera.blob.reads", self._reads)
            self._span.end()

    def __enter__(self) -> _TracedReader:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class _TracedCalls:
    """Wraps every coroutine method of ``target`` in a CLIENT span ``<component>.<method>``;
    other attributes pass through unchanged."""

    def __init__(self, target: object, component: str, attributes: Mapping[str, str]) -> None:
        self._target = target
        self._component = component
        self._attributes = dict(attributes)
        self._wrapped: dict[str, Callable[..., Awaitable[Any]]] = {}

    def __getattr__(self, name: str) -> Any:
        if name in self._wrapped:
            return self._wrapped[name]
        value = getattr(self._target, name)
        if name.startswith("_") or name in UNTRACED or not inspect.iscoroutinefunction(value):
            return value
        self._wrapped[name] = wrapped = self._traced(name, value)
        return wrapped

    def _traced(
        self, name: str, method: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        attributes = {**self._attributes, DB_OPERATION: name}
        span_name = f"{self._component}.{name}"

        @functools.wraps(method)
        async def call(*args: Any, **kwargs: Any) -> Any:
            with client_span(span_name, attributes):
                return await method(*args, **kwargs)

        return call


def traced_index(index: T, *, system: str) -> T:
    """``index`` with a CLIENT span ``index.<operation>`` around each asynchronous call, tagged
    with the database system (``sqlite``, ``mongodb``) and the operation name only."""
    return cast(T, _TracedCalls(index, "index", {DB_SYSTEM: system}))
