"""Scenario 4: WADO-RS series metadata (PS3.18 §10.4.1.1.2) of the 1,000-instance series.

What a viewer asks before it shows a series. The very first request after loading is reported
on its own (nothing cached by a request; Tessera may have built the document ahead, a few seconds
after the series was stored: see bench/README.md), then warm requests give p50/p95.
"""

from __future__ import annotations

import orjson

from bench.client import Reply, Target, call, run_load
from bench.scenarios.base import Metric, Scenario, share
from bench.stats import Sample

ACCEPT = {"Accept": "application/dicom+json"}


class SeriesMetadata(Scenario):
    id = "series_metadata"
    title = "Series metadata, 1,000-instance series"
    needs = ("metadata",)
    metrics = (
        Metric("first_ms", "first request", "ms", "lower"),
        Metric("warm_p50_ms", "warm p50", "ms", "lower"),
        Metric("warm_p95_ms", "warm p95", "ms", "lower"),
    )

    def _url(self, target: Target) -> str:
        series = self.context.dataset.groups["metadata"].series[0]
        return f"{target.url}/studies/{series.study_uid}/series/{series.series_uid}/metadata"

    async def run_round(self, target: Target, index: int) -> Sample:
        session = self.context.session(target)
        url = self._url(target)
        sample = Sample()
        if index == 0:
            first = await call(session, "GET", url, headers=ACCEPT, keep_body=True)
            expected = len(self.context.dataset.groups["metadata"].instances)
            found = len(orjson.loads(first.body))
            sample.latencies["first"] = [first.seconds]
            sample.details.update(instances=found, megabytes=round(first.size / 1e6, 3))
            if found != expected:
                sample.notes.append(f"metadata lists {found} instances, the series has {expected}")

        async def warm(_: int) -> Reply:
            return await call(session, "GET", url, headers=ACCEPT)

        count = share(self.context.size.metadata_requests, self.rounds, index)
        load = await run_load(warm, count=count, concurrency=1, budget=self.budget())
        sample.seconds, sample.requests = load.seconds, load.requests
        sample.latencies["warm"] = load.latencies
        sample.truncated = load.truncated
        return sample

    def values(self, sample: Sample) -> dict[str, float]:
        return {
            "first_ms": sample.latencies["first"][0] * 1000,
            "warm_p50_ms": sample.millis("warm", 50),
            "warm_p95_ms": sample.millis("warm", 95),
        }
