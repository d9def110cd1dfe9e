"""Start the whole of Tessera as separate processes (``tessera serve``) for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from bench.servers import serve_command

READY_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningTessera:
    process: subprocess.Popen[bytes]
    data_dir: Path
    port: int
    log_path: Path

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}/dicom-web"

    @property
    def health_root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def child_pids(self) -> dict[str, int]:
        status = self.data_dir / "run" / "supervisor.json"
        data = json.loads(status.read_text())
        pids = data.get("children", data)
        return {name: int(pid) for name, pid in pids.items() if isinstance(pid, int)}

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tessera serve exited early:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.health_root}/readyz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"tessera did not become ready:\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_tessera(data_dir: Path, *, env: dict[str, str] | None = None) -> RunningTessera:
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "serve.log"
    full_env = {**os.environ, "TESSERA_LOG_LEVEL": "INFO", **(env or {})}
    log = log_path.open("wb")
    process = subprocess.Popen(
        serve_command(port, data_dir),
        stdout=log,
        stderr=subprocess.STDOUT,
        env=full_env,
    )
    running = RunningTessera(process=process, data_dir=data_dir, port=port, log_path=log_path)
    try:
        running.wait_ready()
    except BaseException:
        running.stop()
        raise
    return running
