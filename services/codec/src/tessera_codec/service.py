"""The codec service: transcoding between transfer syntaxes (queue group ``codec``).

It answers ``codec.transcode`` (a whole instance, or some frames) with references to derived
objects in the blob store, made once and cached by (SHA-256 of the stored bytes, target syntax)
— see ``layout``. Decoding and encoding run in a pool of worker processes (ARCHITECTURE
invariant 7); the service itself only moves bytes between a worker's temporary file and object
storage, streaming. ``codec.capabilities`` tells the gateway what can be decoded and encoded;
the same message is announced on ``codec.announce`` when the service starts.

A worker that dies (a native decoder that aborts on hostile data) is replaced and the request
fails with 406; the service stays up (invariant 9).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, TypeVar, cast

import orjson
from pydantic import Field, ValidationError

from tessera_common.blobstore import BlobNotFoundError, BlobStore, check_key, open_blob_store
from tessera_common.bus import Bus
from tessera_common.errors import ErrorCode, TesseraError
from tessera_common.layout import STUDIES_PREFIX
from tessera_common.messages import (
    MAX_TRANSCODE_FRAMES,
    CodecCapabilities,
    CodecSubject,
    DerivedInstance,
    FrameIndex,
    FrameLocation,
    Ping,
    Pong,
    TranscodeReply,
    TranscodeRequest,
)
from tessera_common.metrics import serving_metrics
from tessera_common.settings import Settings
from tessera_common.telemetry import setup_tracing
from tessera_common.workers import spawn_pool

from . import plugins
from .layout import derived_frame_key, derived_index_key, derived_object_key
from .pixels import ConversionError, decodable_syntaxes, encodable_syntaxes
from .transcode import Source, init_worker, transcode_frames_job, transcode_instance_job, warm_up

log = logging.getLogger(__name__)
QUEUE = "codec"
UPLOAD_CHUNK = 1024 * 1024
#: Whole-instance transcoding is chosen for frame requests that name this share of the frames
#: (or for instances of a few frames): one job then serves every later frame request too.
WHOLE_INSTANCE_SHARE = 0.5
SMALL_INSTANCE_FRAMES = 4

T = TypeVar("T")


class CodecSettings(Settings):
    """The shared settings plus the codec's own (``TESSERA_CODEC_WORKERS``)."""

    codec_workers: int = Field(
        default=0, description="worker processes for decoding/encoding; 0: one per CPU, up to 4"
    )

    @property
    def worker_count(self) -> int:
        if self.codec_workers > 0:
            return self.codec_workers
        return max(1, min(4, os.cpu_count() or 1))


class WorkerPool:
    """A process pool that is replaced when a worker dies."""

    def __init__(self, settings: Settings, workers: int) -> None:
        self._settings_json = settings.model_dump_json()
        self._workers = workers
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return spawn_pool(self._workers, init_worker, (self._settings_json,))

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        pool = self._pool
        try:
            return await loop.run_in_executor(pool, function, *args)
        except BrokenProcessPool as exc:
            if self._pool is pool:
                log.error("a codec worker died; starting a new pool")
                pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._new_pool()
            raise TesseraError(
                ErrorCode.NOT_ACCEPTABLE,
                "the pixel data could not be transcoded: the decoder failed on it",
            ) from exc

    async def warm_up(self) -> None:
        await asyncio.gather(*(self.run(warm_up) for _ in range(self._workers)))

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class Transcoder:
    """Serves ``codec.transcode``: cached derived objects, or a worker job to make them."""

    def __init__(self, blobs: BlobStore, pool: WorkerPool, scratch: Path) -> None:
        self._blobs = blobs
        self._pool = pool
        self._scratch = scratch
        self._running: dict[str, asyncio.Future[Any]] = {}
        self.capabilities = CodecCapabilities(
            decode=decodable_syntaxes(), encode=encodable_syntaxes()
        )

    async def transcode(self, request: TranscodeRequest) -> TranscodeReply:
        self._check(request)
        target = request.target_transfer_syntax_uid
        if request.frames is None:
            instance = await self._instance(request)
            return TranscodeReply(transfer_syntax_uid=target, instance=instance)
        return TranscodeReply(transfer_syntax_uid=target, frames=await self._frames(request))

    def _check(self, request: TranscodeRequest) -> None:
        for key in (request.object_key, request.sidecar_key):
            try:
                check_key(key)
            except ValueError as exc:
                raise TesseraError(ErrorCode.BAD_REQUEST, str(exc)) from exc
            if not key.startswith(STUDIES_PREFIX):
                raise TesseraError(ErrorCode.BAD_REQUEST, "only stored instances are transcoded")
        if request.target_transfer_syntax_uid not in self.capabilities.encode:
            raise TesseraError(
                ErrorCode.NOT_ACCEPTABLE,
                f"Tessera cannot encode transfer syntax {request.target_transfer_syntax_uid}",
            )
        if request.transfer_syntax_uid not in self.capabilities.decode:
            raise TesseraError(
                ErrorCode.NOT_ACCEPTABLE,
                f"Tessera cannot decode transfer syntax {request.transfer_syntax_uid}",
            )
        if request.frames is not None and (
            not request.frames or len(request.frames) > MAX_TRANSCODE_FRAMES
        ):
            raise TesseraError(
                ErrorCode.BAD_REQUEST, f"name 1 to {MAX_TRANSCODE_FRAMES} frames per request"
            )
        try:
            derived_index_key(request.sha256, request.target_transfer_syntax_uid)
        except ValueError as exc:
            raise TesseraError(ErrorCode.BAD_REQUEST, str(exc)) from exc

    # --- whole instances ------------------------------------------------------------------

    async def _instance(self, request: TranscodeRequest) -> DerivedInstance:
        index_key = derived_index_key(request.sha256, request.target_transfer_syntax_uid)
        cached = await self._cached_instance(index_key)
        if cached is not None:
            return cached
        made = await self._once(index_key, lambda: self._make_instance(request, index_key))
        return cast(DerivedInstance, made)

    async def _cached_instance(self, index_key: str) -> DerivedInstance | None:
        try:
            return DerivedInstance.model_validate_json(await self._blobs.get(index_key))
        except BlobNotFoundError:
            return None
        except ValidationError:
            log.warning("derived index %s is unreadable; making it again", index_key)
            return None

    async def _make_instance(self, request: TranscodeRequest, index_key: str) -> DerivedInstance:
        cached = await self._cached_instance(index_key)
        if cached is not None:
            return cached
        source = await self._source(request)
        target = request.target_transfer_syntax_uid
        path = self._scratch / f"{uuid.uuid4().hex}.dcm"
        try:
            frames = await self._job(transcode_instance_job, source, target, str(path))
            object_key = derived_object_key(request.sha256, target)
            size = await self._upload(object_key, path)
        finally:
            path.unlink(missing_ok=True)
        derived = DerivedInstance(
            object_key=object_key,
            size=size,
            transfer_syntax_uid=target,
            source_sha256=request.sha256,
            frames=frames,
        )
        await self._blobs.put(index_key, derived.model_dump_json().encode())
        log.info("transcoded an instance to %s (%d bytes)", target, size)
        return derived

    # --- frames ---------------------------------------------------------------------------

    async def _frames(self, request: TranscodeRequest) -> list[FrameLocation]:
        numbers = request.frames or []
        target = request.target_transfer_syntax_uid
        derived = await self._cached_instance(derived_index_key(request.sha256, target))
        if derived is None:
            source = await self._source(request)
            total = source.frames.number_of_frames if source.frames else 1
            if total <= SMALL_INSTANCE_FRAMES or len(set(numbers)) >= WHOLE_INSTANCE_SHARE * total:
                derived = await self._instance(request)
        if derived is not None:
            located = _locate_frames(derived, numbers)
            if located is not None:
                return located
        return await self._single_frames(request, numbers)

    async def _single_frames(
        self, request: TranscodeRequest, numbers: list[int]
    ) -> list[FrameLocation]:
        target = request.target_transfer_syntax_uid
        keys = {n: derived_frame_key(request.sha256, target, n) for n in set(numbers)}
        infos = await asyncio.gather(*(self._blobs.head(k) for k in keys.values()))
        sizes = {n: info.size for n, info in zip(keys, infos, strict=True) if info is not None}
        missing = sorted(n for n in keys if n not in sizes)
        if missing:
            job_key = f"{keys[missing[0]]}+{len(missing)}"
            made = await self._once(job_key, lambda: self._make_frames(request, missing, keys))
            sizes.update(made)
        return [FrameLocation(number=n, key=keys[n], offset=0, length=sizes[n]) for n in numbers]

    async def _make_frames(
        self, request: TranscodeRequest, numbers: list[int], keys: dict[int, str]
    ) -> dict[int, int]:
        source = await self._source(request)
        directory = Path(tempfile.mkdtemp(dir=self._scratch))
        try:
            written = await self._job(
                transcode_frames_job,
                source,
                request.target_transfer_syntax_uid,
                numbers,
                str(directory),
            )
            sizes = {}
            for number, path, size in written:
                await self._blobs.put(keys[number], await asyncio.to_thread(Path(path).read_bytes))
                sizes[number] = size
            return sizes
        finally:
            await asyncio.to_thread(shutil.rmtree, directory, True)

    # --- shared ---------------------------------------------------------------------------

    async def _source(self, request: TranscodeRequest) -> Source:
        """The stored instance with its frame index, read from its sidecar (which must
        describe the same bytes: a re-stored instance has another digest)."""
        try:
            sidecar = orjson.loads(await self._blobs.get(request.sidecar_key))
        except BlobNotFoundError as exc:
            raise TesseraError(ErrorCode.NOT_FOUND, "the instance is no longer stored") from exc
        except orjson.JSONDecodeError as exc:
            raise TesseraError(ErrorCode.INTERNAL, "the instance's sidecar is unreadable") from exc
        if not isinstance(sidecar, dict) or sidecar.get("sha256") != request.sha256:
            raise TesseraError(ErrorCode.NOT_FOUND, "the instance was replaced; retry")
        frames = sidecar.get("frames")
        return Source(
            object_key=request.object_key,
            size=request.size,
            transfer_syntax_uid=request.transfer_syntax_uid,
            frames=FrameIndex.model_validate(frames) if frames else None,
        )

    async def _job(self, function: Callable[..., T], *args: Any) -> T:
        try:
            return await self._pool.run(function, *args)
        except ConversionError as exc:
            raise TesseraError(ErrorCode.NOT_ACCEPTABLE, str(exc)) from exc
        except BlobNotFoundError as exc:
            raise TesseraError(ErrorCode.NOT_FOUND, "the instance is no longer stored") from exc

    async def _once(self, key: str, make: Callable[[], Any]) -> Any:
        """Run ``make`` once for concurrent requests of the same derived object."""
        running = self._running.get(key)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[Any] = asyncio.ensure_future(make())
        self._running[key] = future
        future.add_done_callback(lambda _: self._running.pop(key, None))
        return await asyncio.shield(future)

    async def _upload(self, key: str, path: Path) -> int:
        async def chunks() -> AsyncIterator[bytes]:
            with open(path, "rb") as fp:  # noqa: ASYNC230 - reads go through to_thread
                while chunk := await asyncio.to_thread(fp.read, UPLOAD_CHUNK):
                    yield chunk

        return await self._blobs.put_stream(key, chunks())


def _locate_frames(derived: DerivedInstance, numbers: list[int]) -> list[FrameLocation] | None:
    """Where frames lie in a derived object; None when they cannot be addressed alone
    (bit-packed native frames)."""
    index = derived.frames
    if index is None:
        raise TesseraError(ErrorCode.NOT_FOUND, "the instance has no pixel data")
    located = []
    for number in numbers:
        if not 1 <= number <= index.number_of_frames:
            raise TesseraError(
                ErrorCode.NOT_FOUND,
                f"frame {number} does not exist: the instance has {index.number_of_frames}",
            )
        if index.encapsulated:
            first, _ = index.frames[number - 1]
            offset, length = index.fragments[first]
        elif index.frame_length is None or index.data_offset is None:
            return None
        else:
            offset = index.data_offset + (number - 1) * index.frame_length
            length = index.frame_length
        located.append(
            FrameLocation(number=number, key=derived.object_key, offset=offset, length=length)
        )
    return located


def quiet_pydicom() -> None:
    """pydicom's warnings can quote attribute values; they never reach a log (invariant 10)."""
    import warnings

    import pydicom.config

    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", module=r"pydicom(\..*)?")


async def run(settings: Settings) -> None:
    """Serve transcoding until cancelled."""
    setup_tracing("tessera-codec")
    quiet_pydicom()
    plugins.register()
    codec_settings = CodecSettings(**settings.model_dump())
    blobs = open_blob_store(settings)
    scratch = Path(tempfile.mkdtemp(prefix="tessera-codec-"))
    pool = WorkerPool(settings, codec_settings.worker_count)
    bus = await Bus.connect(
        settings.nats_url, name="tessera-codec", request_timeout=settings.request_timeout
    )
    try:
        transcoder = Transcoder(blobs, pool, scratch)
        ready = False

        async def ping(_: Ping) -> Pong:
            return Pong(service="codec", ready=ready, detail="" if ready else "starting workers")

        async def capabilities(_: Ping) -> CodecCapabilities:
            return transcoder.capabilities

        await bus.serve(CodecSubject.PING, Ping, ping, queue=QUEUE)
        await bus.serve(CodecSubject.CAPABILITIES, Ping, capabilities, queue=QUEUE)
        await bus.serve(CodecSubject.TRANSCODE, TranscodeRequest, transcoder.transcode, queue=QUEUE)
        await pool.warm_up()
        ready = True
        await bus.client.publish(
            CodecSubject.ANNOUNCE, transcoder.capabilities.model_dump_json().encode()
        )
        log.info(
            "codec service ready (%d workers; decodes %d, encodes %d transfer syntaxes)",
            codec_settings.worker_count,
            len(transcoder.capabilities.decode),
            len(transcoder.capabilities.encode),
        )

        async def is_ready() -> bool:
            return ready and bus.connected

        async with serving_metrics(settings.metrics_port, host=settings.host, ready=is_ready):
            await asyncio.Event().wait()
    finally:
        await bus.close()
        pool.shutdown()
        with contextlib.suppress(OSError):
            shutil.rmtree(scratch)
