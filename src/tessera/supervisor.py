"""Embedded mode: one command runs a private nats-server and every service as a child process.

ARCHITECTURE "Modes": ``tessera serve`` needs no other infrastructure, binds 127.0.0.1, stops
everything cleanly on Ctrl-C and restarts a crashed child. Each service runs in its own process
(``python -m tessera <service>``) configured exactly as in distributed mode — through
``TESSERA_*`` environment variables — so both modes run the same code.

While running, ``<data_dir>/run/`` holds:

- ``supervisor.json`` — ``{service: pid}`` of the running services, rewritten on every
  (re)start, so that operators and tests can ``kill -9`` a service and watch it come back;
- ``supervisor.pid`` — this process, to refuse a second ``serve`` on the same data directory;
- ``nats-server.pid`` — the private NATS server (also restarted when it dies).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import aiohttp

from tessera.natsd import NatsServer, NatsServerError
from tessera_common.settings import Settings
from tessera_common.workers import per_cpu

log = logging.getLogger(__name__)

DEFAULT_SERVICES: tuple[str, ...] = ("query", "store", "codec", "render", "gateway")
"""Start order: the index first, the HTTP front door last (stopped in reverse)."""


def render_worker_count(settings: Settings) -> int:
    """``TESSERA_RENDER_WORKERS``, or one per CPU (1 to 4) when it is 0."""
    return per_cpu(settings.render_workers)


def gateway_worker_count(settings: Settings) -> int:
    """``TESSERA_GATEWAY_WORKERS``, or one per CPU (1 to 4) when it is 0."""
    return per_cpu(settings.gateway_workers)


#: Services of which ``tessera serve`` may start several processes, and how many: render
#: processes share a queue group, gateway processes the HTTP port.
REPLICATED: Mapping[str, Callable[[Settings], int]] = {
    "render": render_worker_count,
    "gateway": gateway_worker_count,
}


def process_names(services: Sequence[str], settings: Settings) -> list[tuple[str, str]]:
    """(process name, service command) in start order: ``render``, ``render-2``, …"""
    names: list[tuple[str, str]] = []
    for service in services:
        count = REPLICATED.get(service)
        copies = 1 if count is None else count(settings)
        names.append((service, service))
        names.extend((f"{service}-{number}", service) for number in range(2, copies + 1))
    return names


EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
"""Refused to start: a problem the user can fix (data dir, port, settings)."""

STOP_GRACE = 10.0
"""Seconds a service gets between SIGTERM and SIGKILL."""


@dataclass(frozen=True)
class Backoff:
    """Restart delays: 0.5 s doubling to 10 s, back to 0.5 s after 30 s of healthy uptime."""

    first: float = 0.5
    limit: float = 10.0
    healthy_after: float = 30.0

    def next_delay(self, previous: float | None, uptime: float) -> float:
        if previous is None or uptime >= self.healthy_after:
            return self.first
        return min(previous * 2, self.limit)


# --- pre-flight: each check returns a message for the user, or None when all is well -------


def check_data_dir(data_dir: Path) -> str | None:
    """The data directory exists (or can be made) and accepts new files."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=data_dir, prefix=".write-test-"):
            pass
    except OSError as error:
        reason = error.strerror or str(error)
        return (
            f"cannot use {data_dir.absolute()} as the data directory ({reason}) — make it a "
            "writable directory, or choose another with --data-dir / TESSERA_DATA_DIR"
        )
    return None


def check_not_running(data_dir: Path) -> str | None:
    """No other ``tessera serve`` uses this data directory (two would share one JetStream)."""
    try:
        pid = int((data_dir / "run" / "supervisor.pid").read_text())
    except (OSError, ValueError):
        return None
    if pid == os.getpid() or not _alive(pid):
        return None
    return (
        f"another 'tessera serve' (pid {pid}) is already using {data_dir.absolute()} — stop "
        "it first, or choose another data directory with --data-dir / TESSERA_DATA_DIR"
    )


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie waiting to be reaped."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def check_port_free(host: str, port: int) -> str | None:
    """Nobody listens on *host*:*port* yet (probed like aiohttp binds: with SO_REUSEADDR)."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        return (
            f"cannot listen on host {host!r} ({error}) — choose another with --host / TESSERA_HOST"
        )
    for family, kind, protocol, _, address in addresses:
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    return (
                        f"port {port} on {host} is already in use — stop the other program "
                        "or choose another with --port / TESSERA_PORT"
                    )
                return (
                    f"cannot listen on {host}:{port} ({error.strerror or error}) — choose "
                    "another with --host / --port (TESSERA_HOST / TESSERA_PORT)"
                )
    return None


def preflight(settings: Settings) -> str | None:
    """Everything that must hold before anything is started: the first problem, if any."""
    from tessera_gateway.auth import check_security_settings

    return (
        check_security_settings(settings)
        or check_data_dir(settings.data_dir)
        or check_not_running(settings.data_dir)
        or check_port_free(settings.host, settings.port)
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def local_address(host: str) -> str:
    """Where this machine reaches a server bound to *host* (a wildcard means loopback)."""
    if host in ("", "0.0.0.0"):  # noqa: S104 - recognising the wildcard, not binding to it
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


# --- supervision ------------------------------------------------------------------------------


class Supervised(Protocol):
    """Anything the supervisor keeps alive: a service process or the nats-server."""

    @property
    def name(self) -> str: ...
    @property
    def pid(self) -> int | None: ...
    async def start(self) -> None: ...
    async def wait(self) -> int | None: ...
    async def stop(self) -> None: ...


def stop_grace_of(service: str, settings: Settings) -> float:
    """How long a service may take to stop: the gateway first lets in-flight requests finish
    (``shutdown_grace_seconds``), so it gets that on top of the usual grace."""
    if service == "gateway":
        return STOP_GRACE + settings.shutdown_grace_seconds
    return STOP_GRACE


def child_environment(settings: Settings, nats_url: str) -> dict[str, str]:
    """This process's environment plus every setting as ``TESSERA_<FIELD>``.

    Children read their configuration exactly as in distributed mode; paths are made absolute
    so that a child agrees with the supervisor whatever its working directory.
    """
    environment = dict(os.environ)
    for name, value in settings.model_dump().items():
        key = f"TESSERA_{name.upper()}"
        if value is None:
            environment.pop(key, None)
        elif isinstance(value, Path):
            environment[key] = str(value.resolve())
        elif isinstance(value, bool):
            environment[key] = "true" if value else "false"
        elif isinstance(value, dict | list | tuple | set):
            environment[key] = json.dumps(value, default=str)
        else:
            environment[key] = str(value)
    environment["TESSERA_NATS_URL"] = nats_url
    # One store process writes here: its own locks keep changes of an instance apart.
    environment["TESSERA_INSTANCE_LOCKS"] = "process"
    if gateway_worker_count(settings) > 1:
        environment["TESSERA_REUSE_PORT"] = "true"
    environment["TESSERA_SUPERVISOR_PID"] = str(os.getpid())
    if settings.public_url is None and is_loopback(settings.host):
        # Some clients (dicomweb-client) send a Host header without the port; on loopback the
        # address we bind is the address clients use, so name it in Retrieve URLs.
        environment["TESSERA_PUBLIC_URL"] = (
            f"http://{settings.host}:{settings.port}{settings.base_path.rstrip('/')}"
        )
    return environment


@dataclass
class ServiceProcess:
    """``python -m tessera <service>``; output goes to the supervisor's stderr."""

    name: str
    environment: Mapping[str, str]
    process: asyncio.subprocess.Process | None = None
    #: The ``tessera`` subcommand; the name by default (``render-2`` runs ``render``).
    command: str = ""
    #: Seconds between SIGTERM and SIGKILL; the gateway gets its drain period on top.
    stop_grace: float = STOP_GRACE

    @property
    def pid(self) -> int | None:
        process = self.process
        if process is None or process.returncode is not None:
            return None
        return process.pid

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tessera",
            self.command or self.name,
            stdin=subprocess.DEVNULL,
            env=dict(self.environment),
            # Its own process group: the terminal's Ctrl-C reaches only the supervisor, which
            # stops the services in reverse order and the nats-server last.
            process_group=0,
        )

    async def wait(self) -> int | None:
        process = self.process
        return None if process is None else await process.wait()

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after ``stop_grace`` seconds."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), self.stop_grace)
        except TimeoutError:
            log.warning("%s did not stop within %.0f s; killing it", self.name, self.stop_grace)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    def kill(self) -> None:
        process = self.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()


@dataclass
class Keeper:
    """Restarts one :class:`Supervised` whenever it exits, until :meth:`stop` is called.

    Once *shutting_down* is set (the whole system is stopping, one unit after the other), a unit
    that exits is not restarted.
    """

    unit: Supervised
    on_change: Callable[[], None]
    backoff: Backoff = field(default_factory=Backoff)
    shutting_down: asyncio.Event = field(default_factory=asyncio.Event)
    restarts: int = 0
    _stop_requested: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False)

    def start(self, *, already_running: bool = False) -> None:
        self._task = asyncio.create_task(self._run(already_running), name=f"keep {self.unit.name}")

    async def stop(self) -> None:
        self._stop_requested.set()
        if self._task is not None:
            await self._task

    async def _run(self, already_running: bool) -> None:
        delay: float | None = None
        running = already_running
        while not self._stop_requested.is_set():
            started_at = time.monotonic()
            if not running:
                running = await self._start()
            if running:
                self.on_change()
                outcome = await self._wait_or_stop()
                self.on_change()
                if self._stop_requested.is_set() or self.shutting_down.is_set():
                    return
            else:
                outcome = "could not start"
            running = False
            uptime = time.monotonic() - started_at
            delay = self.backoff.next_delay(delay, uptime)
            self.restarts += 1
            log.warning(
                "%s %s after %.1f s; restart #%d in %.1f s",
                self.unit.name,
                outcome,
                uptime,
                self.restarts,
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_requested.wait(), delay)

    async def _start(self) -> bool:
        try:
            await self.unit.start()
        except (OSError, NatsServerError) as error:
            log.error("cannot start %s: %s", self.unit.name, error)
            return False
        log.info("started %s (pid %s)", self.unit.name, self.unit.pid)
        return True

    async def _wait_or_stop(self) -> str:
        """Wait for the unit to exit (its outcome) or for a stop request (then stop it)."""
        exited = asyncio.ensure_future(self.unit.wait())
        stopping = asyncio.ensure_future(self._stop_requested.wait())
        await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if exited.done():
            return f"exited unexpectedly (code {exited.result()})"
        exited.cancel()
        await self.unit.stop()
        log.info("stopped %s", self.unit.name)
        return "stopped"


class RunDirectory:
    """``<data_dir>/run/``: who is running, for operators and tests."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "run"

    def write_pid(self, name: str, pid: int | None) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        target = self.path / f"{name}.pid"
        if pid is None:
            target.unlink(missing_ok=True)
        else:
            target.write_text(f"{pid}\n")

    def write_services(self, pids: Mapping[str, int | None]) -> None:
        """Atomically replace ``supervisor.json`` with the running services' pids."""
        self.path.mkdir(parents=True, exist_ok=True)
        running = {name: pid for name, pid in pids.items() if pid is not None}
        temporary = self.path / "supervisor.json.tmp"
        temporary.write_text(json.dumps(running, indent=2) + "\n")
        temporary.replace(self.path / "supervisor.json")

    def read_pid(self, name: str) -> int | None:
        try:
            return int((self.path / f"{name}.pid").read_text())
        except (OSError, ValueError):
            return None

    def clear(self) -> None:
        for name in ("supervisor.json", "supervisor.pid", "nats-server.pid"):
            (self.path / name).unlink(missing_ok=True)


def stop_stale_nats_server(run_directory: RunDirectory, config_file: Path) -> int | None:
    """Stop a nats-server left behind by a supervisor that was killed (``kill -9``).

    Services stop themselves when their supervisor dies; the Go server cannot, and two servers
    must never share one JetStream directory. Only a process whose command line names this
    data directory's configuration file is touched (Linux ``/proc``; elsewhere nothing is
    done). Returns the pid that was stopped.
    """
    pid = run_directory.read_pid("nats-server")
    if pid is None:
        return None
    try:
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    if os.fsencode(config_file) not in command_line:
        return None
    log.warning("stopping the nats-server (pid %d) left behind by an earlier run", pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    return pid


async def _announce_when_ready(settings: Settings) -> None:
    """Poll the gateway's ``/healthz`` and print one friendly line once it answers 200."""
    address = local_address(settings.host)
    health = f"http://{address}:{settings.port}/healthz"
    root = settings.public_url or f"http://{address}:{settings.port}{settings.base_path}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0)) as session:
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(health) as response:
                    if response.status == 200:
                        break
            await asyncio.sleep(0.25)
    data_dir = settings.data_dir.resolve()
    print(f"Tessera is ready at {root} (data in {data_dir}) — Ctrl-C to stop", flush=True)


async def serve(settings: Settings, *, services: Sequence[str] = DEFAULT_SERVICES) -> int:
    """Run embedded mode until SIGINT/SIGTERM; returns the process exit code.

    Nothing is started before the pre-flight checks pass (exit code 2 with a message naming
    what to change otherwise).
    """
    problem = preflight(settings)
    if problem is not None:
        print(f"tessera: {problem}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    if not is_loopback(settings.host):
        log.warning(
            "listening on %s makes the archive reachable from other machines without "
            "authentication; keep 127.0.0.1 unless this network is trusted",
            settings.host,
        )

    run_directory = RunDirectory(settings.data_dir)
    nats = NatsServer(settings.data_dir)
    children: list[ServiceProcess] = []
    stop = asyncio.Event()

    def on_signal() -> None:
        if not stop.is_set():
            stop.set()
            return
        log.warning("asked again: killing the services instead of waiting for them")
        for child in children:
            child.kill()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    try:
        run_directory.write_pid("supervisor", os.getpid())
        await asyncio.to_thread(stop_stale_nats_server, run_directory, nats.config_file)
        try:
            await nats.start()
        except NatsServerError as error:
            log.error("%s", error)
            return EXIT_FAILURE
        log.info("nats-server listening at %s (pid %s)", nats.url, nats.pid)
        nats_keeper = Keeper(
            nats, lambda: run_directory.write_pid("nats-server", nats.pid), shutting_down=stop
        )
        nats_keeper.start(already_running=True)

        environment = child_environment(settings, nats.url)
        children = [
            ServiceProcess(
                name, environment, stop_grace=stop_grace_of(command, settings), command=command
            )
            for name, command in process_names(services, settings)
        ]

        def record_services() -> None:
            run_directory.write_services({child.name: child.pid for child in children})

        keepers = [Keeper(child, record_services, shutting_down=stop) for child in children]
        for keeper in keepers:
            keeper.start()
        announce = (
            asyncio.create_task(_announce_when_ready(settings)) if "gateway" in services else None
        )

        await stop.wait()
        log.info("stopping Tessera")
        if announce is not None:
            announce.cancel()
        for keeper in reversed(keepers):
            await keeper.stop()
        await nats_keeper.stop()
        return EXIT_OK
    finally:
        for child in children:
            child.kill()  # only does anything when we got here by an error or cancellation
        await nats.stop()
        run_directory.clear()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
