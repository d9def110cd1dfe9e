"""End to end in distributed mode: every service its own process over real NATS, S3 (SeaweedFS)
and SQLite, driven over HTTP (``tests.support.distributed``).

The scenarios of embedded mode: every storable file of shared/testdata and pydicom's test
files is stored, found by QIDO-RS, retrieved byte-exact, its series metadata read by
dicomweb-client and its frames compared with pydicom's. And what only this tier can show: the
ingest work is shared by both store processes (NATS queue group ``store``), the objects live in
the S3 bucket and nowhere on local disk, one STOW is one trace across the processes (with spans
around object-store and index calls), and every service logs JSON lines that carry trace ids
and no patient data.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import warnings
from collections.abc import Iterator
from pathlib import Path

import obstore
import psutil
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from prometheus_client.parser import text_string_to_metric_families
from pydicom.encaps import generate_frames
from tests.support.dicom_files import (
    TRUNCATED,
    DicomFile,
    all_files,
    shared_files,
    split_by_sop,
    storable_files,
)
from tests.support.distributed import DistributedTessera, running_distributed
from tests.support.http import multipart_body, retrieve_parts, sequence_items, stow
from tests.support.otlp import ReceivedSpan, SpanCollector, running_collector

from bench.synthetic import ct_series
from tessera_common.layout import instance_object_key, sidecar_key
from tessera_common.messages import Subject
from tessera_gateway.mediatype import parse_content_type
from tessera_gateway.multipart import iter_parts

pytestmark = pytest.mark.slow

FILES, _ = split_by_sop(storable_files())
BATCH = 25
VIDEO = {"1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.102"}
DEFLATED = "1.2.840.10008.1.2.1.99"
JSON_LOG_FIELDS = {"time", "service", "level", "logger", "message", "trace_id", "span_id"}


@pytest.fixture(scope="module")
def collector() -> Iterator[SpanCollector]:
    with running_collector() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def tier(
    tmp_path_factory: pytest.TempPathFactory, collector: SpanCollector
) -> Iterator[DistributedTessera]:
    directory = tmp_path_factory.mktemp("distributed")
    with running_distributed(directory, traces_endpoint=collector.endpoint) as running:
        for name in running.absent:
            warnings.warn(
                f"distributed tier runs without the {name} service: the CLI has no "
                f"'{name}' command yet",
                stacklevel=1,
            )
        pids = running.pids()
        yield running
    stray = [pid for pid in pids if psutil.pid_exists(pid) and not _zombie(pid)]
    assert not stray, f"processes left running: {stray}"


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture(scope="module")
def stored(tier: DistributedTessera) -> list[DicomFile]:
    """Store the first file of every SOP Instance UID, in batches of raw PS3.10 bytes."""
    for start in range(0, len(FILES), BATCH):
        batch = FILES[start : start + BATCH]
        response = stow(tier.root, [f.path.read_bytes() for f in batch])
        assert response.status_code in (200, 202), (response.status_code, response.text[:500])
        assert "00081198" not in response.json(), response.headers.get("Warning")
        referenced = sequence_items(response.json(), "00081199")
        assert len(referenced) == len(batch)
    return FILES


def instance_url(tier: DistributedTessera, f: DicomFile) -> str:
    return f"{tier.root}/studies/{f.study_uid}/series/{f.series_uid}/instances/{f.sop_uid}"


def new_traceparent() -> tuple[str, str, str]:
    """(``traceparent`` header, trace id, parent span id) of a trace this test starts."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


# --- the DICOMweb scenarios of embedded mode ---------------------------------------------------


def test_qido_finds_every_instance(tier: DistributedTessera, stored: list[DicomFile]) -> None:
    client = DICOMwebClient(url=tier.root)
    by_study: dict[str, set[str]] = {}
    for f in stored:
        by_study.setdefault(f.study_uid, set()).add(f.sop_uid)
    studies = client.search_for_studies(search_filters={"limit": 10000})
    assert {s["0020000D"]["Value"][0] for s in studies} == set(by_study)
    for study_uid, sops in by_study.items():
        found = client.search_for_instances(
            study_instance_uid=study_uid, search_filters={"limit": 10000}
        )
        assert {i["00080018"]["Value"][0] for i in found} == sops, study_uid


def test_retrieve_is_byte_exact(tier: DistributedTessera, stored: list[DicomFile]) -> None:
    for f in stored:
        ((headers, data),) = retrieve_parts(instance_url(tier, f))
        assert hashlib.sha256(data).hexdigest() == f.sha256, f.path
        assert headers["content-type"].endswith(f"transfer-syntax={f.transfer_syntax_uid}")


def test_series_metadata_via_dicomweb_client(
    tier: DistributedTessera, stored: list[DicomFile]
) -> None:
    client = DICOMwebClient(url=tier.root)
    by_series: dict[tuple[str, str], set[str]] = {}
    for f in stored:
        by_series.setdefault((f.study_uid, f.series_uid), set()).add(f.sop_uid)
    for (study_uid, series_uid), sops in by_series.items():
        metadata = client.retrieve_series_metadata(study_uid, series_uid)
        assert {m["00080018"]["Value"][0] for m in metadata} == sops
        for document in metadata:
            for attribute in document.values():
                uri = attribute.get("BulkDataURI") if isinstance(attribute, dict) else None
                assert uri is None or uri.startswith(f"{tier.root}/studies/{study_uid}/")


def reference_frames(f: DicomFile) -> list[bytes]:
    """The frames pydicom extracts from the original (PS3.5 §8.1.1, §A.4); [] for none."""
    ds = pydicom.dcmread(f.path)
    if "PixelData" not in ds or f.transfer_syntax_uid in VIDEO | {DEFLATED}:
        return []
    count = int(ds.get("NumberOfFrames") or 1)
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:
        return list(generate_frames(ds.PixelData, number_of_frames=count))
    if ds.BitsAllocated == 1:
        return []
    size = ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated // 8
    return [ds.PixelData[i * size : (i + 1) * size] for i in range(count)]


def test_frames_as_stored(tier: DistributedTessera, stored: list[DicomFile]) -> None:
    """Frames by byte range from S3: the first and last frame of every shared file."""
    checked = 0
    for f in stored:
        if f not in shared_files():
            continue
        expected = reference_frames(f)
        if not expected:
            continue
        numbers = sorted({1, len(expected)})
        response = requests.get(
            f"{instance_url(tier, f)}/frames/{','.join(map(str, numbers))}",
            headers={"Accept": 'multipart/related; type="*/*"; transfer-syntax=*'},
            timeout=120,
        )
        assert response.status_code == 200, (f.path, response.status_code, response.text[:300])
        boundary = parse_content_type(response.headers["Content-Type"]).params["boundary"]
        got = [data for _, data in iter_parts(response.content, boundary)]
        assert got == [expected[n - 1] for n in numbers], f.path
        checked += 1
    assert checked >= 30


def test_transcode_through_the_codec_service(
    tier: DistributedTessera, stored: list[DicomFile]
) -> None:
    """RLE Lossless asked for as Explicit VR Little Endian: the codec process reads the stored
    object from S3, writes the derived one back, the gateway streams it."""
    if "codec" in tier.absent:
        pytest.skip("the CLI has no codec command: transcoding is not part of this tier")
    f = next(f for f in stored if f.path.name == "ct_rle.dcm")
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1'
    for _ in range(2):  # the second answer comes from the derived object in S3
        response = requests.get(instance_url(tier, f), headers={"Accept": accept}, timeout=60)
        assert response.status_code == 200, response.text[:300]
        boundary = parse_content_type(response.headers["Content-Type"]).params["boundary"]
        ((_, data),) = iter_parts(response.content, boundary)
        ds = pydicom.dcmread(io.BytesIO(data))
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        assert (ds.pixel_array == pydicom.dcmread(f.path).pixel_array).all()


def test_rendered_requests_spread_over_both_render_workers(
    tier: DistributedTessera, stored: list[DicomFile]
) -> None:
    if "render" in tier.absent:
        pytest.skip("the CLI has no render command yet: no render workers in this tier")
    ct = [f for f in stored if f.path.name.startswith("ct_")][:10]
    for f in ct * 2:
        response = requests.get(
            f"{instance_url(tier, f)}/rendered", headers={"Accept": "image/png"}, timeout=60
        )
        assert response.status_code == 200, (f.path, response.text[:300])
    handled = {
        s.name: sum(
            sample.value
            for family in text_string_to_metric_families(s.metrics_text())
            for sample in family.samples
            if sample.name == "tessera_bus_handler_duration_seconds_count"
            and sample.labels.get("subject", "").startswith("tessera.v1.render.")
        )
        for s in tier.replicas("render")
    }
    assert len(handled) == 2 and all(count > 0 for count in handled.values()), handled


# --- what only the distributed tier shows ------------------------------------------------------


def test_ingest_is_spread_over_both_store_processes(
    tier: DistributedTessera, stored: list[DicomFile]
) -> None:
    labels = {"subject": Subject.STORE_INGEST_BATCH.value, "outcome": "ok"}
    counts = {
        s.name: s.sample("tessera_bus_handler_duration_seconds_count", labels)
        for s in tier.replicas("store")
    }
    assert len(counts) == 2
    assert all(count > 0 for count in counts.values()), counts
    # Each STOW request of BATCH parts travels as two ``store.ingest_batch`` requests.
    assert sum(counts.values()) >= 2 * (len(stored) // BATCH), counts


def test_objects_live_in_s3_only(tier: DistributedTessera, stored: list[DicomFile]) -> None:
    sizes = {
        str(meta["path"]): int(meta["size"])
        for batch in obstore.list(tier.bucket())
        for meta in batch
    }
    for f in stored:
        key = instance_object_key(f.study_uid, f.series_uid, f.sop_uid)
        assert sizes.get(key) == f.path.stat().st_size, key
        assert sidecar_key(f.study_uid, f.series_uid, f.sop_uid) in sizes
    local = [
        path
        for service in tier.services.values()
        for path in service.data_dir.rglob("*")
        if path.is_file() and not path.name.startswith("index.db")
    ]
    assert local == [], "services wrote files outside S3"
    assert not any((s.data_dir / "objects").exists() for s in tier.services.values())


def _post(tier: DistributedTessera, parts: list[bytes], traceparent: str) -> requests.Response:
    body, content_type = multipart_body(parts)
    return requests.post(
        f"{tier.root}/studies",
        data=body,
        headers={
            "Content-Type": content_type,
            "Accept": "application/dicom+json",
            "traceparent": traceparent,
        },
        timeout=60,
    )


def test_truncated_files_are_refused_and_logged_under_their_trace(
    tier: DistributedTessera, collector: SpanCollector
) -> None:
    broken = [f.path.read_bytes() for f in all_files() if f.path.name in TRUNCATED]
    traceparent, trace_id, _ = new_traceparent()
    response = _post(tier, broken, traceparent)
    assert response.status_code == 409, response.text
    failed = sequence_items(response.json(), "00081198")
    assert [i["00081197"]["Value"] for i in failed] == [[0xC000]] * len(TRUNCATED)  # type: ignore[index]

    # The store that rejected a part logged it as JSON, inside the span that handled it.
    rejected = [
        record
        for service in tier.replicas("store")
        for record in map(json.loads, service.log_lines())
        if record["message"].startswith("rejected upload") and record["trace_id"] == trace_id
    ]
    assert len(rejected) == len(TRUNCATED)
    # The parts travel in one batch (``store.ingest_batch``): one span handled them all.
    ingest = ("tessera-store", Subject.STORE_INGEST_BATCH.value, "SERVER")
    spans = collector.wait_for(
        lambda spans: sum(_key(s) == ingest for s in spans) == 1, trace_id=trace_id
    )
    handled = {s.span_id for s in spans if _key(s) == ingest}
    assert {r["span_id"] for r in rejected} == handled


EXPECTED_STOW_SPANS = {
    ("tessera-gateway", "POST /dicom-web/studies", "SERVER"),
    ("tessera-gateway", Subject.STORE_INGEST.value, "CLIENT"),
    ("tessera-store", Subject.STORE_INGEST.value, "SERVER"),
    ("tessera-store", "blob.open_reader", "CLIENT"),
    ("tessera-store", "blob.rename", "CLIENT"),
    ("tessera-store", "blob.put", "CLIENT"),
    ("tessera-store", Subject.EVENT_INSTANCE_STORED.value, "PRODUCER"),
    ("tessera-store", Subject.QUERY_INDEX.value, "CLIENT"),
    ("tessera-query", Subject.QUERY_INDEX.value, "SERVER"),
    ("tessera-query", "index.upsert", "CLIENT"),
}


def _key(span: ReceivedSpan) -> tuple[str, str, str]:
    return span.service, span.name, span.kind


def _names(spans: list[ReceivedSpan]) -> set[tuple[str, str, str]]:
    return {_key(s) for s in spans}


def _upload_reader(spans: list[ReceivedSpan]) -> ReceivedSpan | None:
    """The span of the store's read of the uploaded part (key prefix ``incoming``)."""
    return next(
        (
            s
            for s in spans
            if s.name == "blob.open_reader"
            and s.attributes.get("tessera.blob.key_prefix") == "incoming"
        ),
        None,
    )


def test_one_stow_is_one_trace_across_the_processes(
    tier: DistributedTessera, collector: SpanCollector
) -> None:
    """The caller's trace goes on through gateway → store (+ object-store spans) → query
    (+ index span), every span under the gateway's request span."""
    (instance,) = ct_series(1, seed=3, rows=64, columns=64)
    patient = str(pydicom.dcmread(io.BytesIO(instance.data)).PatientName)
    traceparent, trace_id, caller_span = new_traceparent()
    response = _post(tier, [instance.data], traceparent)
    assert response.status_code == 200, response.text
    spans = collector.wait_for(
        lambda spans: _names(spans) >= EXPECTED_STOW_SPANS and _upload_reader(spans) is not None,
        trace_id=trace_id,
    )
    assert _names(spans) >= EXPECTED_STOW_SPANS, f"missing {EXPECTED_STOW_SPANS - _names(spans)}"

    (root,) = [s for s in spans if s.parent_span_id == caller_span]
    assert (root.service, root.name, root.kind) == (
        "tessera-gateway",
        "POST /dicom-web/studies",
        "SERVER",
    )
    by_id = {s.span_id: s for s in spans}
    for span in spans:
        ancestor = span
        while ancestor.parent_span_id in by_id:
            ancestor = by_id[ancestor.parent_span_id]
        assert ancestor is root, f"{span.service} {span.name} hangs off the request span"

    upsert = next(s for s in spans if s.name == "index.upsert")
    assert upsert.attributes == {"db.system.name": "sqlite", "db.operation.name": "upsert"}
    put = next(s for s in spans if s.name == "blob.put")
    assert put.attributes["tessera.blob.backend"] == "s3"
    assert put.attributes["tessera.blob.key_prefix"] == "studies"
    assert int(str(put.attributes["tessera.blob.bytes"])) > 0
    # The upload is read where it is analysed: a store worker process, in the same trace.
    reader = _upload_reader(spans)
    assert reader is not None and int(str(reader.attributes["tessera.blob.bytes"])) > 0
    values = " ".join(str(v) for s in collector.spans() for v in s.attributes.values())
    assert patient not in values


def test_every_service_logs_json_lines_without_patient_data(
    tier: DistributedTessera, stored: list[DicomFile]
) -> None:
    names = {
        str(pydicom.dcmread(f.path, stop_before_pixels=True).get("PatientName", "")) for f in stored
    }
    names = {n for n in names if len(n) >= 6}
    for service in tier.services.values():
        lines = service.log_lines()
        assert lines, service.name
        for line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                pytest.fail(f"{service.name} wrote a line that is not JSON: {line!r}")
            assert record.keys() >= JSON_LOG_FIELDS, (service.name, line)
            assert record["service"] == service.spec.command
            assert not any(name in line for name in names), (service.name, line)


def test_services_are_separate_processes(tier: DistributedTessera) -> None:
    pids = {s.pid for s in tier.services.values()}
    assert len(pids) == len(tier.services) >= 5
    assert os.getpid() not in pids
    for service in tier.services.values():
        assert service.alive(), f"{service.name} died:\n{service.log_tail()}"
    assert {s.name for s in tier.replicas("store")} == {"store-1", "store-2"}
    assert Path(tier.directory / "logs").is_dir()
