"""Scenario 6: rendered JPEG (PS3.18 §10.4) throughput and thumbnail latency.

Rendered: ``/instances/{sop}/rendered`` as ``image/jpeg`` with 8 concurrent clients, round
robin over the native 512x512 CT series; every request names another window
(``window=c,400,linear``), so each one is rendered, not served from a cache. Thumbnail:
``/instances/{sop}/thumbnail``, one client, p50/p95 (a viewer's study browser asks for these
one after another). Study thumbnails: the thumbnails of all 20 series of a study at once, as
OHIF's study browser asks for them; the first pass of the run and the warm passes after it.
"""

from __future__ import annotations

import asyncio
import time

from bench.client import Reply, Target, Unsupported, call, run_load
from bench.scenarios.base import Metric, Scenario, share
from bench.stats import Sample

CONCURRENCY = 8
ACCEPT = {"Accept": "image/jpeg"}
#: Warm passes over the study's series thumbnails per round.
WARM_PASSES = 5


class Rendered(Scenario):
    id = "rendered"
    title = "Rendered JPEG, 8 clients"
    needs = ("frames_native",)
    metrics: tuple[Metric, ...] = (
        Metric("images_per_s", "images/s", "1/s", "higher"),
        Metric("p50_ms", "p50", "ms", "lower"),
        Metric("p95_ms", "p95", "ms", "lower"),
    )
    resource = "rendered"
    concurrency = CONCURRENCY

    def _requests(self, index: int) -> int:
        return share(self.context.size.rendered_requests, self.rounds, index)

    def _params(self, round_index: int, n: int) -> list[tuple[str, str]]:
        """A window no other request of the run uses: every image is rendered anew."""
        center = 40 + round_index * 10_000 + n
        return [("window", f"{center},400,linear")]

    async def run_round(self, target: Target, index: int) -> Sample:
        session = self.context.session(target)
        instances = self.context.dataset.groups["frames_native"].instances
        urls = [f"{self.context.instance_url(target, i)}/{self.resource}" for i in instances]

        async def image(n: int) -> Reply:
            return await call(
                session, "GET", urls[n % len(urls)], headers=ACCEPT, params=self._params(index, n)
            )

        load = await run_load(
            image, count=self._requests(index), concurrency=self.concurrency, budget=self.budget()
        )
        return Sample(
            seconds=load.seconds,
            requests=load.requests,
            items=load.requests,
            bytes=load.bytes,
            latencies={"request": load.latencies},
            details={"concurrency": self.concurrency},
            truncated=load.truncated,
        )

    def values(self, sample: Sample) -> dict[str, float]:
        return {
            "images_per_s": sample.rate(sample.items),
            "p50_ms": sample.millis("request", 50),
            "p95_ms": sample.millis("request", 95),
        }


class Thumbnail(Rendered):
    id = "thumbnail"
    title = "Thumbnail latency, 1 client"
    metrics = (
        Metric("p50_ms", "p50", "ms", "lower"),
        Metric("p95_ms", "p95", "ms", "lower"),
    )
    resource = "thumbnail"
    concurrency = 1

    def _requests(self, index: int) -> int:
        return share(self.context.size.thumbnail_requests, self.rounds, index)

    def _params(self, round_index: int, n: int) -> list[tuple[str, str]]:
        return []

    def values(self, sample: Sample) -> dict[str, float]:
        return {"p50_ms": sample.millis("request", 50), "p95_ms": sample.millis("request", 95)}


class StudyThumbnails(Scenario):
    id = "study_thumbnails"
    title = "Thumbnails of a 20-series study"
    needs = ("thumbnails",)
    metrics = (
        Metric("warm_p50_ms", "warm p50", "ms", "lower"),
        Metric("warm_p95_ms", "warm p95", "ms", "lower"),
        Metric("first_ms", "first", "ms", "lower"),
    )

    async def run_round(self, target: Target, index: int) -> Sample:
        session = self.context.session(target)
        series = self.context.dataset.groups["thumbnails"].series
        urls = [
            f"{target.url}/studies/{s.study_uid}/series/{s.series_uid}/thumbnail" for s in series
        ]

        async def one_pass() -> float:
            started = time.perf_counter()
            replies = await asyncio.gather(
                *(call(session, "GET", url, headers=ACCEPT) for url in urls)
            )
            for reply in replies:
                if reply.status != 200:
                    raise Unsupported(reply.status, f"series thumbnail answered {reply.status}")
            return time.perf_counter() - started

        latencies: dict[str, list[float]] = {}
        if index == 0:
            latencies["first"] = [await one_pass()]
        warm = [await one_pass() for _ in range(WARM_PASSES)]
        latencies["warm"] = warm
        return Sample(
            seconds=sum(warm),
            requests=len(urls) * (WARM_PASSES + (index == 0)),
            items=len(urls) * WARM_PASSES,
            latencies=latencies,
            details={"series": len(urls)},
        )

    def values(self, sample: Sample) -> dict[str, float]:
        values = {
            "warm_p50_ms": sample.millis("warm", 50),
            "warm_p95_ms": sample.millis("warm", 95),
        }
        if "first" in sample.latencies:
            values["first_ms"] = sample.millis("first", 50)
        return values
