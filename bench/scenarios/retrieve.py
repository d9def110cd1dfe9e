"""Scenario 7: WADO-RS whole-series retrieve (PS3.18 §10.4.1.1.1), MB/s.

The native 512x512 CT series as ``multipart/related; type="application/dicom";
transfer-syntax=*`` (the stored bytes), one client, read to the last byte.
"""

from __future__ import annotations

from bench.client import Reply, Target, call, run_load
from bench.scenarios.base import Metric, Scenario, share
from bench.stats import Sample

ACCEPT = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}


class SeriesRetrieve(Scenario):
    id = "retrieve_series"
    title = "Series retrieve, 1 client"
    needs = ("frames_native",)
    metrics = (
        Metric("mb_per_s", "MB/s", "MB/s", "higher"),
        Metric("p50_ms", "p50 per series", "ms", "lower"),
    )

    async def run_round(self, target: Target, index: int) -> Sample:
        session = self.context.session(target)
        group = self.context.dataset.groups["frames_native"]
        series = group.series[0]
        url = f"{target.url}/studies/{series.study_uid}/series/{series.series_uid}"

        async def retrieve(_: int) -> Reply:
            return await call(session, "GET", url, headers=ACCEPT, timeout=600)

        count = share(self.context.size.retrieve_requests, self.rounds, index)
        load = await run_load(retrieve, count=count, concurrency=1, budget=self.budget())
        sample = Sample(
            seconds=load.seconds,
            requests=load.requests,
            items=load.requests,
            bytes=load.bytes,
            latencies={"request": load.latencies},
            details={"series_megabytes": round(group.bytes / 1e6, 3)},
            truncated=load.truncated,
        )
        if load.requests and load.bytes / load.requests < group.bytes:
            sample.notes.append("a response was shorter than the series' stored bytes")
        return sample

    def values(self, sample: Sample) -> dict[str, float]:
        return {"mb_per_s": sample.rate(sample.bytes / 1e6), "p50_ms": sample.millis("request", 50)}
