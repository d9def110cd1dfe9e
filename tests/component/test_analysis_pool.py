"""The store's analysis worker processes (``tessera_store.analysis_pool``), for real: what they
return equals what the store's own threads return, for good, refused and missing uploads; a
worker that dies is replaced and its batch left to the threads."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from bench.synthetic import ct_series
from tessera_common.blobstore import BlobNotFoundError, LocalBlobs
from tessera_common.errors import FailureReason
from tessera_common.layout import incoming_key
from tessera_common.messages import IngestRequest
from tessera_common.settings import Settings
from tessera_store.analysis import (
    InstanceAnalysis,
    InstanceRejectedError,
    analyze_instance,
    quiet_pydicom,
)
from tessera_store.analysis_pool import AnalysisPool


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("analysis") / "objects"


@pytest.fixture(scope="module")
async def pool(root: Path) -> AsyncIterator[AnalysisPool]:
    settings = Settings(data_dir=root.parent, blob_backend="local", blob_root=root)
    running = AnalysisPool(settings, 2, quiet_pydicom)
    await running.warm_up()
    yield running
    running.shutdown()


async def upload(blobs: LocalBlobs, data: bytes) -> IngestRequest:
    key = incoming_key()
    await blobs.put(key, data)
    return IngestRequest(upload_key=key, size=len(data), sha256="00" * 32)


def in_threads(blobs: LocalBlobs, request: IngestRequest) -> InstanceAnalysis | Exception:
    try:
        with blobs.open_reader(request.upload_key, size=request.size) as fp:
            return analyze_instance(fp, size=request.size, expected_study_uid=None)
    except Exception as exc:
        return exc


async def test_workers_answer_as_the_store_itself_would(pool: AnalysisPool, root: Path) -> None:
    blobs = LocalBlobs(root)
    good = [instance.data for instance in ct_series(5, seed=2, rows=16, columns=16)]
    truncated = good[0][:-100]  # ends inside the pixel data
    requests = [await upload(blobs, data) for data in [*good, truncated, b"not DICOM at all"]]
    requests.append(IngestRequest(upload_key=incoming_key(), size=10, sha256="00" * 32))
    results = await pool.analyze(requests)
    assert results is not None and len(results) == len(requests)
    for request, result in zip(requests[:5], results[:5], strict=True):
        assert result == in_threads(blobs, request)
    for result in results[5:7]:
        assert isinstance(result, InstanceRejectedError)
        assert result.failure_reason is FailureReason.CANNOT_UNDERSTAND
        assert result.reason
    assert isinstance(results[7], BlobNotFoundError)
    expected = in_threads(blobs, requests[5])
    assert isinstance(expected, InstanceRejectedError)
    assert (results[5].reason, results[5].sop_uid) == (expected.reason, expected.sop_uid)  # type: ignore[union-attr]


async def test_a_dead_worker_is_replaced(pool: AnalysisPool, root: Path) -> None:
    blobs = LocalBlobs(root)
    (instance,) = ct_series(1, seed=3, rows=16, columns=16)
    request = await upload(blobs, instance.data)
    workers = [
        p for p in psutil.Process(os.getpid()).children() if "spawn" in " ".join(p.cmdline())
    ]
    assert workers, "the pool runs worker processes"
    os.kill(workers[0].pid, signal.SIGKILL)
    await asyncio.sleep(0.5)
    broken = await pool.analyze([request])
    assert broken is None  # the caller analyses this batch in its own threads
    again = await pool.analyze([request])
    assert again is not None
    (result,) = again
    assert isinstance(result, InstanceAnalysis)
    assert result.sop_uid == instance.sop_uid
