"""STOW-RS from the benchmark (PS3.18 §10.5): multipart bodies, batches, several clients."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence

import aiohttp

from bench.client import Load, Reply, Unsupported, call, run_load
from bench.dataset import Dataset, InstanceRef

STOW_TIMEOUT = 600.0


def multipart(parts: Sequence[bytes | memoryview]) -> tuple[bytes, str]:
    """A ``multipart/related; type="application/dicom"`` body and its Content-Type."""
    boundary = uuid.uuid4().hex
    head = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    chunks: list[bytes | memoryview] = []
    for part in parts:
        chunks += [head, part, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f'multipart/related; type="application/dicom"; boundary={boundary}'


def batches(instances: Sequence[InstanceRef], size: int) -> list[Sequence[InstanceRef]]:
    return [instances[i : i + size] for i in range(0, len(instances), size)]


async def stow_instances(
    session: aiohttp.ClientSession,
    root: str,
    dataset: Dataset,
    group: str,
    instances: Sequence[InstanceRef],
    *,
    batch: int,
    clients: int,
    budget: float,
    on_batch: Callable[[int, int], None] | None = None,
) -> Load:
    """STOW ``instances`` of ``group`` in requests of ``batch`` from ``clients`` concurrent
    clients. Any failed instance (409, or a 4xx/5xx) raises ``Unsupported``.
    ``on_batch(instances, bytes)`` follows progress."""
    planned = batches(instances, batch)

    async def send(index: int) -> Reply:
        parts = [dataset.data(group, i) for i in planned[index]]
        body, content_type = multipart(parts)
        reply = await call(
            session,
            "POST",
            f"{root}/studies",
            headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
            data=body,
            timeout=STOW_TIMEOUT,
        )
        if reply.status not in (200, 202):
            raise Unsupported(reply.status, f"STOW answered {reply.status}")
        size = sum(len(p) for p in parts)
        if on_batch is not None:
            on_batch(len(parts), size)
        return Reply(reply.status, size, reply.seconds)

    return await run_load(send, count=len(planned), concurrency=clients, budget=budget)
