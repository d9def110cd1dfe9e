"""Scenario 5: WADO-RS frames (PS3.18 §10.4.1.1.3) with 8 concurrent clients.

Frame 1 of each instance of a 512x512 CT series, round robin. The native series is asked for as
OHIF asks by default: ``multipart/related; type="application/octet-stream"; transfer-syntax=*``.
The JPEG-LS copy is asked for twice: as stored (``type="image/jls"`` with the JPEG-LS lossless
transfer syntax: no server transcodes), and with OHIF's default Accept, where each server
chooses (it may decode). The transfer syntax a server actually sent is recorded (``work``), so
that unequal work is flagged in the comparison.
"""

from __future__ import annotations

import re

from bench.client import Reply, Target, call, run_load
from bench.scenarios.base import Metric, Scenario, share
from bench.stats import Sample

CONCURRENCY = 8
OHIF_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
JPEG_LS_ACCEPT = 'multipart/related; type="image/jls"; transfer-syntax=1.2.840.10008.1.2.4.80'
PART_SYNTAX = re.compile(rb"transfer-syntax=([0-9.]+)", re.IGNORECASE)


def served_syntax(body: bytes) -> str:
    """The transfer syntax named in the first part's headers, or "unknown"."""
    found = PART_SYNTAX.search(body[:1024])
    return found.group(1).decode() if found else "unknown"


class Frames(Scenario):
    group: str
    accept: str = OHIF_ACCEPT
    metrics = (
        Metric("frames_per_s", "frames/s", "1/s", "higher"),
        Metric("mb_per_s", "MB/s", "MB/s", "higher"),
        Metric("p50_ms", "p50", "ms", "lower"),
        Metric("p95_ms", "p95", "ms", "lower"),
    )

    async def run_round(self, target: Target, index: int) -> Sample:
        session = self.context.session(target)
        instances = self.context.dataset.groups[self.group].instances
        urls = [f"{self.context.instance_url(target, i)}/frames/1" for i in instances]
        headers = {"Accept": self.accept}
        served: list[str] = []

        async def frame(n: int) -> Reply:
            keep = n == 0
            reply = await call(session, "GET", urls[n % len(urls)], headers=headers, keep_body=keep)
            if keep:
                served.append(served_syntax(reply.body))
            return reply

        count = share(self.context.size.frame_requests, self.rounds, index)
        load = await run_load(frame, count=count, concurrency=CONCURRENCY, budget=self.budget())
        sample = Sample(
            seconds=load.seconds,
            requests=load.requests,
            items=load.requests,
            bytes=load.bytes,
            latencies={"request": load.latencies},
            details={"concurrency": CONCURRENCY, "instances": len(urls), "accept": self.accept},
            truncated=load.truncated,
        )
        if served:
            sample.details["work"] = f"served as {served[0]}"
        return sample

    def values(self, sample: Sample) -> dict[str, float]:
        return {
            "frames_per_s": sample.rate(sample.items),
            "mb_per_s": sample.rate(sample.bytes / 1e6),
            "p50_ms": sample.millis("request", 50),
            "p95_ms": sample.millis("request", 95),
        }


class FramesNative(Frames):
    id = "frames_native"
    title = "Frames, 8 clients, stored native"
    group = "frames_native"
    needs = ("frames_native",)


class FramesJpegLs(Frames):
    id = "frames_jpegls"
    title = "Frames, 8 clients, stored JPEG-LS, asked as stored (image/jls)"
    group = "frames_jpegls"
    needs = ("frames_jpegls",)
    accept = JPEG_LS_ACCEPT


class FramesJpegLsAnySyntax(FramesJpegLs):
    id = "frames_jpegls_ohif"
    title = "Frames, 8 clients, stored JPEG-LS, OHIF's Accept (server's choice)"
    accept = OHIF_ACCEPT
