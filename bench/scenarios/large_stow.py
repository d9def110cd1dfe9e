"""Scenario 2: STOW of one very large multi-frame instance, with the servers' peak RSS.

1 GiB for ``--size large`` (256 MiB for small and medium), generated frame by frame into a file
and streamed from disk with a Content-Length: the client never holds it in memory. Where the
bench knows a server's process tree (the embedded Tessera it started, or ``--compare-pid``), the
peak resident memory of every process is sampled during the request: ARCHITECTURE invariant 5
says it must not grow with the object's size.
"""

from __future__ import annotations

import time

import aiohttp

from bench.client import Failed, Target, Unsupported, reason_of
from bench.largeobject import LargeObject, write_large_object
from bench.rss import PeakRss
from bench.scenarios.base import Metric, Scenario
from bench.stats import Sample

TIMEOUT = 1800.0
MIB = 2**20


class LargeStow(Scenario):
    id = "large_stow"
    title = "Large-object STOW, one multi-frame instance"
    metrics = (
        Metric("mb_per_s", "MB/s", "MB/s", "higher"),
        Metric("seconds", "time", "s", "lower"),
        Metric("peak_rss_mib", "peak RSS, largest process", "MiB", "lower"),
    )
    _object: LargeObject | None = None

    @property
    def rounds(self) -> int:
        return 1

    def _large_object(self) -> LargeObject:
        if self._object is None:
            self._object = write_large_object(
                self.context.scratch / "large-object.mime",
                size=self.context.size.large_object_bytes,
                seed=self.context.dataset.manifest["seed"],
            )
        return self._object

    async def _send(
        self, session: aiohttp.ClientSession, target: Target, body: LargeObject
    ) -> float:
        started = time.perf_counter()
        try:
            with body.path.open("rb") as data:
                async with session.post(
                    f"{target.url}/studies",
                    data=data,
                    headers={"Content-Type": body.content_type, "Accept": "application/dicom+json"},
                    timeout=aiohttp.ClientTimeout(total=TIMEOUT),
                ) as response:
                    answer = await response.read()
                    if response.status >= 400:
                        raise Unsupported(response.status, reason_of(answer, response.headers))
        except (aiohttp.ClientError, TimeoutError) as error:
            raise Failed(f"large STOW: {type(error).__name__}: {error}") from None
        return time.perf_counter() - started

    async def run_round(self, target: Target, index: int) -> Sample:
        body = self._large_object()
        session = self.context.session(target)
        peaks: dict[str, int] = {}
        if target.pid is not None:
            with PeakRss(target.pid) as rss:
                seconds = await self._send(session, target, body)
            peaks = rss.peaks
        else:
            seconds = await self._send(session, target, body)
        sample = Sample(
            seconds=seconds,
            requests=1,
            items=1,
            bytes=body.instance_bytes,
            details={
                "object_megabytes": round(body.instance_bytes / 1e6, 1),
                "frames": body.frames,
            },
        )
        if peaks:
            sample.details["peak_rss_mib"] = {
                name: round(peak / MIB, 1) for name, peak in sorted(peaks.items())
            }
        else:
            sample.notes.append("peak RSS not sampled: the bench did not start this server")
        return sample

    def values(self, sample: Sample) -> dict[str, float]:
        values = {"mb_per_s": sample.rate(sample.bytes / 1e6), "seconds": sample.seconds}
        peaks = sample.details.get("peak_rss_mib")
        if isinstance(peaks, dict) and peaks:
            values["peak_rss_mib"] = max(float(v) for v in peaks.values())
        return values
