"""Helpers for the worker processes a service starts (the codec's transcoders, the store's
analysers)."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

PARENT_CHECK_SECONDS = 1.0


def exit_with_parent() -> None:
    """End this worker when the service that started it is gone (even by ``kill -9``, which
    gives a process pool no chance to stop its workers): a daemon thread watches the parent."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def spawn_pool(
    workers: int, initializer: Callable[..., None], initargs: tuple[Any, ...]
) -> ProcessPoolExecutor:
    """A process pool whose workers are spawned, not forked: a service's parent process runs
    obstore's and nats' threads, which a fork would copy mid-flight."""
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=initializer,
        initargs=initargs,
    )


def per_cpu(asked: int, *, most: int = 4) -> int:
    """``asked``, or one per CPU (1 to ``most``) when it is 0."""
    return asked if asked > 0 else max(1, min(most, os.cpu_count() or 1))
