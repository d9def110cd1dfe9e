"""How one STOW request's parts are cut into ``store.ingest_batch`` requests, and the store's
``query.index_batch`` pages (ARCHITECTURE invariant 6: messages stay far below 1 MiB)."""

from __future__ import annotations

import pytest

from tessera_common.messages import (
    MAX_INDEX_BATCH,
    MAX_INGEST_BATCH,
    PAGE_BYTES,
    IndexBatchRequest,
    IngestBatchRequest,
    IngestRequest,
    InstanceRecord,
)
from tessera_gateway.stow import INGEST_BATCH_BYTES, INGEST_BATCH_PARTS, ingest_batches
from tessera_gateway.stow_parts import ReceivedPart
from tessera_store.batching import index_pages, rounds

MIB = 1024 * 1024

# (id, part sizes, expected batch lengths)
BATCHES = [
    ("none", [], []),
    ("one", [100], [1]),
    ("twenty-balanced", [512 * 1024] * 20, [10, 10]),
    ("sixteen-in-one", [1000] * 16, [16]),
    ("seventeen", [1000] * 17, [9, 8]),
    ("large-parts-alone", [40 * MIB, 40 * MIB, 1000, 1000], [1, 3]),
    ("huge-part", [1000, 300 * MIB, 1000], [1, 1, 1]),
]


@pytest.mark.parametrize(
    ("sizes", "lengths"), [b[1:] for b in BATCHES], ids=[b[0] for b in BATCHES]
)
def test_ingest_batches(sizes: list[int], lengths: list[int]) -> None:
    parts = [
        (i, ReceivedPart(index=i, upload_key=f"incoming/{i}", size=s)) for i, s in enumerate(sizes)
    ]
    batches = ingest_batches(parts)
    assert [len(b) for b in batches] == lengths
    assert [item for batch in batches for item in batch] == parts, "every part once, in order"
    for batch in batches:
        assert len(batch) <= INGEST_BATCH_PARTS <= MAX_INGEST_BATCH
        assert len(batch) == 1 or sum(p.size for _, p in batch) <= INGEST_BATCH_BYTES


def test_largest_ingest_batch_is_small() -> None:
    part = IngestRequest(
        upload_key="incoming/" + "f" * 36, size=2**40, sha256="0" * 64, expected_study_uid="1" * 64
    )
    request = IngestBatchRequest(parts=[part] * MAX_INGEST_BATCH)
    assert len(request.model_dump_json()) < PAGE_BYTES // 16


def record(n: int, metadata_bytes: int) -> InstanceRecord:
    return InstanceRecord(
        study_uid="1.2",
        series_uid="1.2.3",
        sop_uid=f"1.2.3.{n}",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        object_key=f"studies/1.2/series/1.2.3/instances/1.2.3.{n}.dcm",
        sidecar_key=f"studies/1.2/series/1.2.3/instances/1.2.3.{n}.json",
        size=1,
        sha256="0" * 64,
        stored_at="2026-01-01T00:00:00+00:00",
        metadata={"00080070": {"vr": "LO", "Value": ["x" * metadata_bytes]}},
    )


@pytest.mark.parametrize(
    ("count", "metadata_bytes"),
    [(1, 100), (200, 100), (30, 100_000), (10, 200_000), (5, 300_000)],
    ids=["one", "many-small", "medium", "near-inline-limit", "by-reference"],
)
def test_index_pages_stay_below_page_bytes(count: int, metadata_bytes: int) -> None:
    records = [record(n, metadata_bytes) for n in range(count)]
    pages = index_pages(records)
    assert [r for page in pages for r, _ in page] == records
    for page in pages:
        assert len(page) <= MAX_INDEX_BATCH
        sent = IndexBatchRequest(records=[message for _, message in page])
        assert len(sent.model_dump_json()) < PAGE_BYTES
    if metadata_bytes > 256 * 1024:
        assert all(message.metadata is None for page in pages for _, message in page)


def test_rounds_keep_repeats_in_order() -> None:
    items = ["a1", "b1", "a2", "c1", "a3", "b2"]
    assert rounds(items, key=lambda item: item[0]) == [["a1", "b1", "c1"], ["a2", "b2"], ["a3"]]
