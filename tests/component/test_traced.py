"""Spans around object-store and index calls (``tessera_common.traced``), over a real local
blob store and a real SQLite index; spans collected with the SDK's in-memory exporter.

Each span must name the operation and carry only bounded, patient-free attributes: the key's
first segment, byte counts, the backend, the error *type* (ARCHITECTURE invariant 10)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tessera_common.blobstore import BlobNotFoundError, BlobStore, LocalBlobs
from tessera_common.telemetry import setup_tracing
from tessera_common.traced import TracedBlobStore, key_prefix, traced_index
from tessera_query.index import Index, ThreadedIndex
from tessera_query.sqlite_index import SqliteIndex

STUDY = "1.2.826.0.1.3680043.8.498.77"
KEY = f"studies/{STUDY}/series/1.2.3/instances/1.2.3.4.dcm"
PATIENT = "DOE^JANE"


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    setup_tracing("tessera-test", environ={"OTEL_TRACES_SAMPLER": "always_on"})
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return memory


@pytest.fixture
def spans(exporter: InMemorySpanExporter) -> Iterator[InMemorySpanExporter]:
    exporter.clear()
    yield exporter
    exporter.clear()


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return TracedBlobStore(LocalBlobs(tmp_path / "objects"), backend="local")


def storage_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [
        s
        for s in exporter.get_finished_spans()
        if s.name.startswith(("blob.", "index.")) and s.kind is SpanKind.CLIENT
    ]


def named(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    (span,) = [s for s in storage_spans(exporter) if s.name == name]
    return span


@pytest.mark.parametrize(
    ("key", "prefix"),
    [
        pytest.param(KEY, "studies", id="instance"),
        pytest.param("incoming/4f2a", "incoming", id="upload"),
        pytest.param("derived/abc/1.2.840.10008.1.2.4.80.dcm", "derived", id="derived"),
        pytest.param(f"{STUDY}/x", "-", id="uid-first-is-hidden"),
        pytest.param("", "-", id="empty"),
    ],
)
def test_key_prefix(key: str, prefix: str) -> None:
    assert key_prefix(key) == prefix


async def test_every_blob_call_is_one_client_span(
    blobs: BlobStore, spans: InMemorySpanExporter
) -> None:
    await blobs.put("incoming/upload", b"x" * 1000)
    await blobs.rename("incoming/upload", KEY)
    assert await blobs.get(KEY) == b"x" * 1000
    assert await blobs.get_range(KEY, 10, 20) == b"x" * 10
    assert (await blobs.head(KEY)) is not None
    assert b"".join([chunk async for chunk in blobs.stream(KEY)]) == b"x" * 1000
    assert [info.key async for info in blobs.list("studies/")] == [KEY]
    await blobs.delete(KEY)
    await blobs.ping()

    expected = [
        "blob.put",
        "blob.rename",
        "blob.get",
        "blob.get_range",
        "blob.head",
        "blob.stream",
        "blob.list",
        "blob.delete",
    ]
    assert [s.name for s in storage_spans(spans)] == expected  # ping is never traced
    put = named(spans, "blob.put")
    assert dict(put.attributes or {}) == {
        "tessera.blob.backend": "local",
        "tessera.blob.key_prefix": "incoming",
        "tessera.blob.bytes": 1000,
    }
    assert named(spans, "blob.rename").attributes == {
        "tessera.blob.backend": "local",
        "tessera.blob.key_prefix": "studies",
        "tessera.blob.source_prefix": "incoming",
    }
    assert (named(spans, "blob.get_range").attributes or {})["tessera.blob.bytes"] == 10
    assert (named(spans, "blob.stream").attributes or {})["tessera.blob.bytes"] == 1000
    assert (named(spans, "blob.list").attributes or {})["tessera.blob.objects"] == 1
    for span in storage_spans(spans):
        assert STUDY not in str(dict(span.attributes or {})), span.name


async def test_a_blob_span_is_a_child_of_the_current_span(
    blobs: BlobStore, spans: InMemorySpanExporter
) -> None:
    with trace.get_tracer("tests").start_as_current_span("tessera.v1.store.ingest") as parent:
        await blobs.put(KEY, b"data")
    put = named(spans, "blob.put")
    assert put.parent is not None
    assert put.parent.span_id == parent.get_span_context().span_id


async def test_a_reader_span_lasts_until_the_reader_is_closed(
    blobs: BlobStore, spans: InMemorySpanExporter
) -> None:
    await blobs.put(KEY, bytes(range(256)) * 10)
    spans.clear()
    with blobs.open_reader(KEY, size=2560) as reader:
        assert reader.read(4) == bytes(range(4))
        reader.seek(256)
        assert reader.tell() == 256
        assert reader.read(2) == bytes([0, 1])
        assert storage_spans(spans) == []  # still open
    span = named(spans, "blob.open_reader")
    assert (span.attributes or {})["tessera.blob.bytes"] == 6
    assert (span.attributes or {})["tessera.blob.reads"] == 2
    assert reader.closed


async def test_a_failed_call_records_the_error_type_only(
    blobs: BlobStore, spans: InMemorySpanExporter
) -> None:
    with pytest.raises(BlobNotFoundError):
        await blobs.get(KEY)
    with pytest.raises(BlobNotFoundError):
        blobs.open_reader(KEY)
    for name in ("blob.get", "blob.open_reader"):
        span = named(spans, name)
        assert span.status.status_code is StatusCode.ERROR
        assert (span.attributes or {})["error.type"] == "BlobNotFoundError"
        assert span.events == (), "no exception event: its message may quote data"


@pytest.fixture
async def index(tmp_path: Path) -> AsyncIterator[Index]:
    traced = traced_index(ThreadedIndex(SqliteIndex(tmp_path / "index.db")), system="sqlite")
    yield traced
    await traced.close()


async def test_index_calls_are_client_spans_named_by_operation(
    index: Index, spans: InMemorySpanExporter
) -> None:
    assert await index.contains("1.2.3", "0" * 64) is False
    assert await index.instance_metadata("1.2.3") is None
    assert await index.ping()
    assert [s.name for s in storage_spans(spans)] == ["index.contains", "index.instance_metadata"]
    assert named(spans, "index.contains").attributes == {
        "db.system.name": "sqlite",
        "db.operation.name": "contains",
    }


class FailingIndex:
    async def search(self, query: str) -> None:
        raise ValueError(f"no match for PatientName={query}")


async def test_a_failed_index_call_records_the_error_type_only(
    spans: InMemorySpanExporter,
) -> None:
    index = traced_index(FailingIndex(), system="mongodb")
    with pytest.raises(ValueError, match="PatientName"):
        await index.search(PATIENT)
    span = named(spans, "index.search")
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "ValueError"
    assert PATIENT not in str(dict(span.attributes or {}))
    assert span.events == ()
