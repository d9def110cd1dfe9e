"""Render worker scaling: rendered images per second with 1, 2, … render processes.

For each worker count, an embedded Tessera is started with ``TESSERA_RENDER_WORKERS=N``, a
512x512 CT series is stored, and ``render.frame`` requests are sent straight to the render
queue group over NATS (the gateway and HTTP left out, so that the render processes are what
is measured), each with a window no other request uses: every one is rendered, none is served
from the cache. The same run also reports ``/rendered`` over HTTP, the whole path.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.ingest import stow_ingest
from bench.servers import embedded_tessera
from bench.synthetic import SyntheticInstance, ct_series
from tessera_common.bus import Bus
from tessera_common.messages import (
    InstanceLocation,
    LocateReply,
    LocateRequest,
    RenderReply,
    RenderRequest,
    RenderSubject,
    Subject,
)
from tessera_common.rendering import RenderParams, Window

#: The private nats-server's address, from the configuration ``tessera serve`` wrote for it.
_LISTEN = re.compile(r'^listen: "([^"]+)"', re.MULTILINE)


@dataclass(frozen=True)
class WorkerResult:
    workers: int
    bus_per_second: float
    http_per_second: float


async def _bus_rate(nats_url: str, study_uid: str, count: int, concurrency: int) -> float:
    bus = await Bus.connect(nats_url, name="bench-render", request_timeout=60)
    try:
        reply = await bus.request(
            Subject.QUERY_LOCATE, LocateRequest(study_uid=study_uid), LocateReply
        )
        fields = set(InstanceLocation.model_fields)
        located = [
            InstanceLocation.model_validate(i.model_dump(include=fields)) for i in reply.instances
        ]
        numbers = iter(range(count))

        async def worker() -> None:
            for n in numbers:
                params = RenderParams(window=Window(center=1_000_000 + n, width=400))
                request = RenderRequest(
                    instance=located[n % len(located)], frames=[1], params=params
                )
                await bus.request(RenderSubject.FRAME, request, RenderReply)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return count / (time.perf_counter() - started)
    finally:
        await bus.close()


async def _http_rate(urls: Sequence[str], count: int, concurrency: int) -> float:
    numbers = iter(range(count))
    async with aiohttp.ClientSession() as session:

        async def worker() -> None:
            for n in numbers:
                url = f"{urls[n % len(urls)]}/rendered?window={2_000_000 + n},400"
                async with session.get(url, headers={"Accept": "image/jpeg"}) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{url} answered {response.status}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return count / (time.perf_counter() - started)


def measure(
    worker_counts: Sequence[int], *, count: int, concurrency: int, instances: int = 20
) -> list[WorkerResult]:
    series: list[SyntheticInstance] = list(ct_series(instances, seed=7))
    study_uid = series[0].study_uid
    results = []
    for workers in worker_counts:
        with tempfile.TemporaryDirectory(prefix="tessera-render-bench-") as scratch:
            data_dir = Path(scratch) / "data"
            environment = {"TESSERA_RENDER_WORKERS": str(workers), "TESSERA_RENDER_THREADS": "1"}
            with embedded_tessera(data_dir, env=environment) as (root, _):
                stow_ingest(root, series, clients=1, batch=len(series))
                found = _LISTEN.search((data_dir / "nats" / "nats-server.conf").read_text())
                if found is None:
                    raise RuntimeError("cannot find the embedded Tessera's NATS address")
                urls = [
                    f"{root}/studies/{i.study_uid}/series/{i.series_uid}/instances/{i.sop_uid}"
                    for i in series
                ]
                nats_url = f"nats://{found.group(1)}"
                bus = asyncio.run(_bus_rate(nats_url, study_uid, count, concurrency))
                http = asyncio.run(_http_rate(urls, count, concurrency))
            results.append(WorkerResult(workers, bus, http))
    return results
