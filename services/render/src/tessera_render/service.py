"""The render service: rendered and thumbnail images (queue group ``render``, PS3.18 §10.4).

It answers ``render.frame``: the rendered image of one or more frames of a stored instance,
inline when small, otherwise by the key of the cached object (invariant 6). Results are
cached in the blob store by (SHA-256 of the stored bytes, frames, parameters), see ``layout``:
a small image once this process has been asked for it a second time (``SecondRequest``), a
large one (answered by reference) always. Concurrent requests for the same image share one
rendering.

Scaling is by processes: each ``tessera render`` joins the queue group, and NATS spreads the
requests over them (embedded mode starts ``TESSERA_RENDER_WORKERS`` of them; Kubernetes
scales the Deployment). Inside one process the CPU work runs in ``TESSERA_RENDER_THREADS``
threads, never on the event loop (invariant 7); numpy and Pillow release the GIL.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from tessera_codec import plugins
from tessera_codec.pixels import ConversionError
from tessera_codec.service import quiet_pydicom
from tessera_common.blobstore import BlobNotFoundError, BlobStore, check_key, open_blob_store
from tessera_common.bus import Bus, WithPayload
from tessera_common.errors import ErrorCode, TesseraError
from tessera_common.layout import STUDIES_PREFIX
from tessera_common.lru import Lru
from tessera_common.messages import (
    INLINE_RENDER_BYTES,
    Ping,
    Pong,
    RenderReply,
    RenderRequest,
    RenderSubject,
)
from tessera_common.metrics import WorkerLoad, serving_metrics
from tessera_common.settings import Settings
from tessera_common.telemetry import setup_tracing

from .layout import rendered_key
from .pipeline import RenderError
from .source import FrameIndexes, Headers, render_stored

log = logging.getLogger(__name__)
QUEUE = "render"
T = TypeVar("T")


class SecondRequest:
    """Which rendered images to cache: those asked for before (the last ``capacity`` keys are
    remembered).

    Thumbnails and a viewer's default renderings come back again and again; an interactive
    window drag asks for a new image at every step, never twice. Writing each of those would
    cost about a third of a cold rendering's CPU and fill the disk with images nobody asks for
    again (CDNs admit objects on a second hit for the same reason)."""

    def __init__(self, capacity: int = 65_536) -> None:
        self._seen: Lru[str, bool] = Lru(capacity)

    def admit(self, key: str) -> bool:
        if self._seen.pop(key):
            return True
        self._seen.put(key, True)
        return False


class Renderer:
    """Serves ``render.frame``: a cached image, or a rendering in the thread pool."""

    def __init__(self, blobs: BlobStore, threads: int) -> None:
        self._blobs = blobs
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="render")
        self._indexes = FrameIndexes(blobs)
        self._headers = Headers()
        self._running: dict[str, asyncio.Future[bytes]] = {}
        self._writes: dict[str, asyncio.Task[None]] = {}
        self._admission = SecondRequest()
        self.load = WorkerLoad("render", workers=threads)

    async def render(self, request: RenderRequest) -> RenderReply | WithPayload:
        instance = request.instance
        _check_keys(instance.object_key, instance.sidecar_key)
        try:
            key = rendered_key(instance.sha256, request.frames, request.params)
        except ValueError as exc:
            raise TesseraError(ErrorCode.BAD_REQUEST, str(exc)) from exc
        media_type = request.params.media_type
        try:
            data = await self._blobs.get(key)
            cached = True
        except BlobNotFoundError:
            data = await self._once(key, lambda: self._make(request, key))
            cached = False
        if len(data) <= INLINE_RENDER_BYTES:
            reply = RenderReply(media_type=media_type, size=len(data), cached=cached)
            return WithPayload(reply, data)
        if not cached:
            await self._stored(key)
        return RenderReply(media_type=media_type, size=len(data), key=key, cached=cached)

    async def _make(self, request: RenderRequest, key: str) -> bytes:
        frames = await self._indexes.get(request.instance)
        with self.load.job("frame"):
            data = await self._run(render_stored, self._blobs, self._headers, request, frames)
        # Cached after the answer: the client need not wait for the write. A large image is
        # answered by reference to its cached copy, so it is always written.
        if len(data) > INLINE_RENDER_BYTES or self._admission.admit(key):
            self._writes[key] = asyncio.create_task(self._cache(key, data))
        return data

    async def _cache(self, key: str, data: bytes) -> None:
        try:
            await self._blobs.put(key, data)
        except Exception:
            log.warning("could not cache a rendered image", exc_info=True)
        finally:
            self._writes.pop(key, None)

    async def _stored(self, key: str) -> None:
        """Wait until the image at ``key`` is written (a reply by reference needs it)."""
        write = self._writes.get(key)
        if write is not None:
            await asyncio.shield(write)

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, function, *args)
        except (ConversionError, RenderError) as exc:
            raise TesseraError(ErrorCode.NOT_ACCEPTABLE, str(exc)) from exc
        except BlobNotFoundError as exc:
            raise TesseraError(ErrorCode.NOT_FOUND, "the instance is no longer stored") from exc

    async def _once(self, key: str, make: Callable[[], Any]) -> bytes:
        """Run ``make`` once for concurrent requests of the same image."""
        running = self._running.get(key)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[bytes] = asyncio.ensure_future(make())
        self._running[key] = future
        future.add_done_callback(lambda _: self._running.pop(key, None))
        return await asyncio.shield(future)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _check_keys(*keys: str) -> None:
    for key in keys:
        try:
            check_key(key)
        except ValueError as exc:
            raise TesseraError(ErrorCode.BAD_REQUEST, str(exc)) from exc
        if not key.startswith(STUDIES_PREFIX):
            raise TesseraError(ErrorCode.BAD_REQUEST, "only stored instances are rendered")


async def run(settings: Settings) -> None:
    """Serve rendering until cancelled."""
    setup_tracing("tessera-render")
    quiet_pydicom()
    plugins.register()
    blobs = open_blob_store(settings)
    renderer = Renderer(blobs, settings.render_threads)
    bus = await Bus.connect(
        settings.nats_url, name="tessera-render", request_timeout=settings.request_timeout
    )
    try:

        async def ping(_: Ping) -> Pong:
            return Pong(service="render", ready=True)

        await bus.serve(RenderSubject.PING, Ping, ping, queue=QUEUE)
        await bus.serve(RenderSubject.FRAME, RenderRequest, renderer.render, queue=QUEUE)
        log.info("render service ready (%d threads)", settings.render_threads)

        async def is_ready() -> bool:
            return bus.connected

        async with serving_metrics(settings.metrics_port, host=settings.host, ready=is_ready):
            await asyncio.Event().wait()
    finally:
        await bus.close()
        renderer.shutdown()
