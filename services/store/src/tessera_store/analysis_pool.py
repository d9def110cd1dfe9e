"""Instance analysis in worker processes (``TESSERA_ANALYSIS_WORKERS``).

Parsing a header and building its DICOM JSON is Python code that holds the GIL: in threads it
runs on one core, and it is most of the store's CPU work per instance. The store therefore
hands each batch's uploads to a small process pool, split evenly over the workers, and keeps
its own event loop for placing, announcing and indexing. Measured on 2 cores with small
instances: ingest about 30 % faster, from 1 client as from 4.

Workers open the uploads through their own (traced) blob store, inside a ``store.analyze``
span that continues the request's trace (its context travels with the job). Results come back
as tagged tuples
(``Outcome``), so that no exception has to survive pickling; a worker that dies breaks the
pool, which is replaced, and that batch is analysed in the store's own threads instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Literal

from tessera_common.blobstore import BlobNotFoundError, BlobStore, open_blob_store
from tessera_common.errors import FailureReason
from tessera_common.messages import IngestRequest
from tessera_common.settings import Settings
from tessera_common.telemetry import extract_context, inject_headers, setup_tracing, tracer
from tessera_common.traced import TracedBlobStore
from tessera_common.workers import exit_with_parent, spawn_pool

from .analysis import InstanceAnalysis, InstanceRejectedError, analyze_instance

log = logging.getLogger(__name__)

#: What a worker returns for one upload.
Outcome = (
    tuple[Literal["analysed"], InstanceAnalysis]
    | tuple[Literal["rejected"], dict[str, Any]]
    | tuple[Literal["missing"], str]
    | tuple[Literal["failed"], str]
)
#: (upload key, size, expected Study Instance UID) of one upload.
Job = tuple[str, int, str | None]

_blobs: BlobStore | None = None
_TRACER = tracer(__name__)


def init_worker(settings_json: str, prepare: Callable[[], None]) -> None:
    """Pool initializer: tracing as the store has it, the worker's own blob store, pydicom
    quiet (``prepare``), and an exit when the store service dies."""
    global _blobs
    exit_with_parent()
    prepare()
    setup_tracing("tessera-store")
    settings = Settings.model_validate_json(settings_json)
    _blobs = TracedBlobStore(open_blob_store(settings), backend=settings.blob_backend)


def analyze_jobs(jobs: Sequence[Job], trace_context: dict[str, str]) -> list[Outcome]:
    """Worker entry point: analyse each upload, in a span of the request's trace."""
    if _blobs is None:
        raise RuntimeError("init_worker was not called in this process")
    with _TRACER.start_as_current_span(
        "store.analyze",
        context=extract_context(trace_context),
        attributes={"tessera.instances": len(jobs)},
    ):
        return [_outcome(_blobs, job) for job in jobs]


def _outcome(blobs: BlobStore, job: Job) -> Outcome:
    key, size, expected_study_uid = job
    try:
        with blobs.open_reader(key, size=size) as fp:
            analysis = analyze_instance(fp, size=size, expected_study_uid=expected_study_uid)
        return ("analysed", analysis)
    except InstanceRejectedError as rejected:
        return ("rejected", _rejection(rejected))
    except BlobNotFoundError:
        return ("missing", key)
    except Exception as exc:
        return ("failed", f"{type(exc).__name__}: analysis failed")


def _rejection(error: InstanceRejectedError) -> dict[str, Any]:
    return {
        "failure_reason": int(error.failure_reason),
        "reason": error.reason,
        "sop_class_uid": error.sop_class_uid,
        "sop_uid": error.sop_uid,
        "study_uid": error.study_uid,
        "series_uid": error.series_uid,
    }


def result_of(outcome: Outcome) -> InstanceAnalysis | Exception:
    """What ``Ingestor._analyze`` would have returned or raised in this process."""
    match outcome:
        case ("analysed", InstanceAnalysis() as analysis):
            return analysis
        case ("rejected", dict() as fields):
            reason = FailureReason(fields.pop("failure_reason"))
            return InstanceRejectedError(reason, fields.pop("reason"), **fields)
        case ("missing", str() as key):
            return BlobNotFoundError(key)
        case (_, detail):
            return RuntimeError(str(detail))


class AnalysisPool:
    """A process pool for ``analyze_jobs``, replaced when a worker dies."""

    def __init__(self, settings: Settings, workers: int, prepare: Callable[[], None]) -> None:
        self.workers = workers
        self._settings_json = settings.model_dump_json()
        self._prepare = prepare
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return spawn_pool(self.workers, init_worker, (self._settings_json, self._prepare))

    async def analyze(
        self, requests: Sequence[IngestRequest]
    ) -> list[InstanceAnalysis | Exception] | None:
        """One result per request, in order; None when the pool broke (the caller then
        analyses in its own threads)."""
        jobs = [(r.upload_key, r.size, r.expected_study_uid) for r in requests]
        share = -(-len(jobs) // self.workers) or 1
        trace_context = inject_headers({})
        loop = asyncio.get_running_loop()
        pool = self._pool
        try:
            parts = await asyncio.gather(
                *(
                    loop.run_in_executor(pool, analyze_jobs, jobs[i : i + share], trace_context)
                    for i in range(0, len(jobs), share)
                )
            )
        except BrokenProcessPool:
            if self._pool is pool:
                log.error("an analysis worker died; starting a new pool")
                pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._new_pool()
            return None
        return [result_of(outcome) for part in parts for outcome in part]

    async def warm_up(self) -> None:
        """Start the workers now (each imports pydicom and numpy, about a second)."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(self._pool, analyze_jobs, [], {}) for _ in range(self.workers))
        )

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
