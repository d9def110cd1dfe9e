"""Scenario: STOW ingest throughput (instances/s, MB/s) with a fixed number of clients."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import requests

from bench.synthetic import SyntheticInstance


@dataclass(frozen=True)
class IngestResult:
    instances: int
    megabytes: float
    seconds: float
    clients: int
    batch: int

    @property
    def instances_per_second(self) -> float:
        return self.instances / self.seconds

    @property
    def megabytes_per_second(self) -> float:
        return self.megabytes / self.seconds


def _body(batch: Sequence[SyntheticInstance]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    chunks = []
    for instance in batch:
        chunks += [
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(),
            instance.data,
            b"\r\n",
        ]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f'multipart/related; type="application/dicom"; boundary={boundary}'


def stow_ingest(
    root: str, instances: Sequence[SyntheticInstance], *, clients: int, batch: int
) -> IngestResult:
    """STOW ``instances`` in batches of ``batch`` from ``clients`` concurrent clients; every
    request must answer 200 (all stored)."""
    bodies = [_body(instances[i : i + batch]) for i in range(0, len(instances), batch)]

    def send(body: tuple[bytes, str]) -> None:
        data, content_type = body
        response = requests.post(
            f"{root}/studies",
            data=data,
            headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
            timeout=600,
        )
        if response.status_code != 200:
            raise RuntimeError(f"STOW answered {response.status_code}: {response.text[:300]}")

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(send, bodies))
    seconds = time.perf_counter() - started
    size = sum(len(i.data) for i in instances) / 1e6
    return IngestResult(len(instances), size, seconds, clients, batch)
