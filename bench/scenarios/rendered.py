"""Scenario 6: rendered JPEG (PS3.18 §10.4.1.1.5) throughput and thumbnail latency.

Rendered: ``/instances/{sop}/rendered`` as ``image/jpeg`` with 8 concurrent clients, round
robin over the native 512x512 CT series. Thumbnail: ``/instances/{sop}/thumbnail``, one client,
p50/p95 (a viewer's study browser asks for these one after another).
"""

from __future__ import annotations

from bench.client import Reply, Target, call, run_load
from bench.scenarios.base import Metric, Scenario, share
from bench.stats import Sample

CONCURRENCY = 8
ACCEPT = {"Accept": "image/jpeg"}


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

    async def run_round(self, target: Target, index: int) -> Sample:
        session = self.context.session(target)
        instances = self.context.dataset.groups["frames_native"].instances
        urls = [f"{self.context.instance_url(target, i)}/{self.resource}" for i in instances]

        async def image(n: int) -> Reply:
            return await call(session, "GET", urls[n % len(urls)], headers=ACCEPT)

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

    def values(self, sample: Sample) -> dict[str, float]:
        return {"p50_ms": sample.millis("request", 50), "p95_ms": sample.millis("request", 95)}
