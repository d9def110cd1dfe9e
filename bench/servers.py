"""The embedded Tessera the bench starts when no ``--url`` is given.

``python -m tessera serve`` on a free loopback port with its own data directory; the context
manager waits for ``/readyz`` (bounded) and stops the whole process tree afterwards, also on
errors and Ctrl-C.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import requests

READY_TIMEOUT = 90.0
STOP_TIMEOUT = 60.0


class ServerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(base: str, process: subprocess.Popen[bytes], log: Path | None = None) -> None:
    """Poll ``{base}/readyz`` until it answers 200, at most ``READY_TIMEOUT`` seconds."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(f"tessera serve exited during start-up{_tail(log)}")
        try:
            if requests.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise ServerError(f"tessera did not become ready in {READY_TIMEOUT:.0f}s{_tail(log)}")


def _tail(log: Path | None) -> str:
    if log is None or not log.exists():
        return ""
    lines = log.read_text(errors="replace").splitlines()[-20:]
    return ":\n" + "\n".join(lines)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the supervisor stops its children), SIGKILL if it does not exit in time."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def serve_command(port: int, data_dir: Path) -> list[str]:
    """The command line of an embedded Tessera on ``port`` (tests start it the same way)."""
    return [
        sys.executable,
        "-m",
        "tessera",
        "serve",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
    ]


@contextmanager
def embedded_tessera(
    data_dir: Path,
    port: int | None = None,
    *,
    log: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[tuple[str, int]]:
    """Start ``tessera serve`` (with ``env`` added to the environment); yields (DICOMweb root,
    supervisor pid)."""
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log = log or data_dir / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            serve_command(port, data_dir),
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        try:
            wait_ready(f"http://127.0.0.1:{port}", process, log)
            yield f"http://127.0.0.1:{port}/dicom-web", process.pid
        finally:
            stop(process)
