"""The ``tessera`` command and the building blocks of ``tessera serve`` (no service is run)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tessera import cli
from tessera.cli import app, run_until_signalled
from tessera.supervisor import Backoff, Keeper, child_environment, is_loopback, local_address
from tessera_common.settings import Settings

SETTINGS_VARIABLES = ("TESSERA_HOST", "TESSERA_PORT", "TESSERA_DATA_DIR", "TESSERA_BASE_PATH")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env=dict.fromkeys(SETTINGS_VARIABLES))


@pytest.fixture(autouse=True)
def keep_logging() -> Iterator[None]:
    """The commands configure logging for a process; give pytest its handlers back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# --- help ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        pytest.param(["--help"], ["serve", "gateway", "store", "query", "version"], id="tessera"),
        pytest.param(
            ["serve", "--help"],
            ["--host", "--port", "--data-dir", "--base-path", "TESSERA_PORT", "Ctrl-C"],
            id="serve",
        ),
        pytest.param(
            ["gateway", "--help"],
            ["TESSERA_NATS_URL", "TESSERA_HOST", "TESSERA_PORT", "TESSERA_PUBLIC_URL"],
            id="gateway",
        ),
        pytest.param(
            ["store", "--help"],
            ["TESSERA_NATS_URL", "TESSERA_S3_ENDPOINT", "TESSERA_BLOB_ROOT"],
            id="store",
        ),
        pytest.param(
            ["query", "--help"],
            ["TESSERA_NATS_URL", "TESSERA_MONGODB_URI", "TESSERA_SQLITE_PATH"],
            id="query",
        ),
        pytest.param(["version", "--help"], ["--help", "nats-server"], id="version"),
    ],
)
def test_help(runner: CliRunner, arguments: list[str], expected: list[str]) -> None:
    result = runner.invoke(app, arguments, terminal_width=120)
    assert result.exit_code == 0, result.output
    for text in expected:
        assert text in result.output


def test_version(runner: CliRunner) -> None:
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0, result.output
    assert "tessera 0.1" in result.output
    assert "nats-server v2." in result.output


def test_python_dash_m_tessera() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "tessera", "--help"], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stderr
    assert "Usage: tessera" in completed.stdout


# --- serve refuses to start, before starting anything --------------------------------------


def assert_nothing_started(data_dir: Path) -> None:
    for started in ("nats", "logs", "run"):
        assert not (data_dir / started).exists()


def test_serve_refuses_a_data_dir_under_a_regular_file(runner: CliRunner, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    data_dir = blocker / "data"
    result = runner.invoke(app, ["serve", "--data-dir", str(data_dir), "--port", str(free_port())])
    assert result.exit_code == 2, result.output
    assert str(data_dir) in result.stderr
    assert "--data-dir" in result.stderr
    assert not data_dir.exists()


def test_serve_refuses_a_data_dir_that_is_a_file(runner: CliRunner, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.write_text("")
    result = runner.invoke(app, ["serve", "--data-dir", str(data_dir), "--port", str(free_port())])
    assert result.exit_code == 2, result.output
    assert str(data_dir) in result.stderr


def test_serve_refuses_a_port_in_use(runner: CliRunner, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        result = runner.invoke(app, ["serve", "--data-dir", str(data_dir), "--port", str(port)])
    assert result.exit_code == 2, result.output
    assert (
        f"port {port} on 127.0.0.1 is already in use — stop the other program or choose "
        "another with --port / TESSERA_PORT"
    ) in result.stderr
    assert_nothing_started(data_dir)


def test_serve_refuses_a_data_dir_in_use(runner: CliRunner, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "run").mkdir(parents=True)
    (data_dir / "run" / "supervisor.pid").write_text(f"{os.getppid()}\n")
    result = runner.invoke(app, ["serve", "--data-dir", str(data_dir), "--port", str(free_port())])
    assert result.exit_code == 2, result.output
    assert f"(pid {os.getppid()}) is already using {data_dir}" in result.stderr
    assert not (data_dir / "nats").exists()


def test_invalid_environment_is_reported(runner: CliRunner) -> None:
    result = runner.invoke(app, ["serve"], env={"TESSERA_PORT": "eighty"})
    assert result.exit_code == 2
    assert "invalid configuration" in result.stderr
    assert "port" in result.stderr


# --- building blocks of the supervisor -----------------------------------------------------


@pytest.mark.parametrize(
    ("previous", "uptime", "expected"),
    [
        pytest.param(None, 0.1, 0.5, id="first-restart"),
        pytest.param(0.5, 0.1, 1.0, id="doubles"),
        pytest.param(8.0, 0.1, 10.0, id="capped"),
        pytest.param(10.0, 5.0, 10.0, id="stays-capped"),
        pytest.param(10.0, 30.0, 0.5, id="reset-after-healthy-uptime"),
    ],
)
def test_backoff(previous: float | None, uptime: float, expected: float) -> None:
    assert Backoff().next_delay(previous, uptime) == expected


@pytest.mark.parametrize(
    ("host", "loopback", "reached_at"),
    [
        pytest.param("127.0.0.1", True, "127.0.0.1", id="ipv4-loopback"),
        pytest.param("localhost", True, "localhost", id="localhost"),
        pytest.param("::1", True, "[::1]", id="ipv6-loopback"),
        pytest.param("0.0.0.0", False, "127.0.0.1", id="ipv4-wildcard"),
        pytest.param("::", False, "[::1]", id="ipv6-wildcard"),
        pytest.param("192.168.1.20", False, "192.168.1.20", id="lan"),
    ],
)
def test_hosts(host: str, loopback: bool, reached_at: str) -> None:
    assert is_loopback(host) is loopback
    assert local_address(host) == reached_at


def test_child_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TESSERA_BLOB_ROOT", "/stale")  # overridden below: must not reach a child
    settings = Settings(
        data_dir=Path("relative"), port=9999, s3_allow_http=True, blob_root=None, gateway_workers=1
    )
    environment = child_environment(settings, "nats://127.0.0.1:4567")
    assert environment["TESSERA_NATS_URL"] == "nats://127.0.0.1:4567"
    assert environment["TESSERA_DATA_DIR"] == str(tmp_path / "relative")
    assert environment["TESSERA_PORT"] == "9999"
    assert environment["TESSERA_S3_ALLOW_HTTP"] == "true"
    assert environment["TESSERA_SUPERVISOR_PID"] == str(os.getpid())
    assert "TESSERA_BLOB_ROOT" not in environment
    assert environment["TESSERA_PUBLIC_URL"] == "http://127.0.0.1:9999/dicom-web"

    monkeypatch.setattr(os, "environ", environment)
    expected = settings.model_copy(
        update={
            "nats_url": "nats://127.0.0.1:4567",
            "data_dir": tmp_path / "relative",
            "public_url": "http://127.0.0.1:9999/dicom-web",
            "instance_locks": "process",
        }
    )
    assert Settings().model_dump() == expected.model_dump()


@pytest.mark.parametrize(
    ("host", "public_url", "expected"),
    [
        ("127.0.0.1", None, "http://127.0.0.1:8080/dicom-web"),
        ("0.0.0.0", None, None),
        ("127.0.0.1", "https://pacs.example/dicom-web", "https://pacs.example/dicom-web"),
    ],
    ids=["loopback-default", "wildcard-uses-host-header", "explicit-wins"],
)
def test_public_url_default(host: str, public_url: str | None, expected: str | None) -> None:
    environment = child_environment(Settings(host=host, public_url=public_url), "nats://x:1")
    assert environment.get("TESSERA_PUBLIC_URL") == expected


class FakeUnit:
    """Stands for a service process: it 'crashes' when told to."""

    name = "fake"

    def __init__(self) -> None:
        self.starts = 0
        self.stops = 0
        self.started: asyncio.Queue[int] = asyncio.Queue()
        self._crash = asyncio.Event()

    @property
    def pid(self) -> int | None:
        return 1000 + self.starts

    async def start(self) -> None:
        self.starts += 1
        self._crash = asyncio.Event()
        self.started.put_nowait(self.starts)

    async def wait(self) -> int | None:
        await self._crash.wait()
        return -9

    async def stop(self) -> None:
        self.stops += 1

    def crash(self) -> None:
        self._crash.set()


async def test_keeper_restarts_a_crashed_unit_and_stops_it() -> None:
    unit = FakeUnit()
    changes: list[int | None] = []
    keeper = Keeper(unit, lambda: changes.append(unit.pid), Backoff(first=0.01, limit=0.02))
    keeper.start()
    async with asyncio.timeout(5):
        assert await unit.started.get() == 1
        unit.crash()
        assert await unit.started.get() == 2
        unit.crash()
        assert await unit.started.get() == 3
        await keeper.stop()
    assert keeper.restarts == 2
    assert unit.stops == 1
    assert unit.starts == 3
    assert changes[0] == 1001
    assert changes[-1] == 1003


# --- one service in its own process --------------------------------------------------------


async def test_a_service_stops_cleanly_on_sigterm() -> None:
    started = asyncio.Event()
    cleaned_up = False

    async def run(settings: Settings) -> None:
        nonlocal cleaned_up
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cleaned_up = True

    async def send_sigterm() -> None:
        await started.wait()
        os.kill(os.getpid(), signal.SIGTERM)

    sender = asyncio.create_task(send_sigterm())
    assert await run_until_signalled("fake", run, Settings()) == 0
    await sender
    assert cleaned_up


async def test_a_failing_service_exits_1() -> None:
    async def run(settings: Settings) -> None:
        raise RuntimeError("boom")

    assert await run_until_signalled("fake", run, Settings()) == 1


async def test_an_orphaned_service_stops() -> None:
    async def run(settings: Settings) -> None:
        await asyncio.Event().wait()

    not_our_parent = os.getpid()
    async with asyncio.timeout(5):
        assert await run_until_signalled("fake", run, Settings(), not_our_parent) == 0


async def test_a_second_signal_exits_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    forced: list[str] = []
    exit_attempted = asyncio.Event()

    def record_exit(name: str, reason: str) -> None:
        forced.append(reason)
        exit_attempted.set()

    monkeypatch.setattr(cli, "exit_now", record_exit)
    first_cancel = asyncio.Event()
    let_go = asyncio.Event()

    async def run(settings: Settings) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            first_cancel.set()
            await let_go.wait()  # a clean-up that hangs
            raise

    async def press_ctrl_c_twice() -> None:
        await asyncio.sleep(0)
        os.kill(os.getpid(), signal.SIGINT)
        await first_cancel.wait()
        os.kill(os.getpid(), signal.SIGINT)
        await exit_attempted.wait()
        let_go.set()

    presser = asyncio.create_task(press_ctrl_c_twice())
    async with asyncio.timeout(5):
        assert await run_until_signalled("fake", run, Settings()) == 0
    await presser
    assert forced == ["was asked to stop twice"]


@pytest.mark.parametrize(
    ("service", "grace"),
    [("gateway", 10.0 + 30.0), ("store", 10.0), ("query", 10.0), ("codec", 10.0)],
    ids=["gateway-drains", "store", "query", "codec"],
)
def test_stop_grace_leaves_the_gateway_its_drain(service: str, grace: float) -> None:
    from tessera.supervisor import stop_grace_of

    assert stop_grace_of(service, Settings(shutdown_grace_seconds=30)) == grace


@pytest.mark.parametrize(
    ("workers", "expected"),
    [
        (1, [("query", "query"), ("render", "render"), ("gateway", "gateway")]),
        (
            3,
            [
                ("query", "query"),
                ("render", "render"),
                ("render-2", "render"),
                ("render-3", "render"),
                ("gateway", "gateway"),
            ],
        ),
    ],
    ids=["one-render-worker", "three-render-workers"],
)
def test_serve_starts_the_render_workers_asked_for(
    workers: int, expected: list[tuple[str, str]]
) -> None:
    from tessera.supervisor import process_names

    settings = Settings(render_workers=workers, gateway_workers=1)
    assert process_names(("query", "render", "gateway"), settings) == expected


def test_render_and_gateway_workers_default_to_one_per_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tessera.supervisor import gateway_worker_count, render_worker_count

    for cpus, expected in ((1, 1), (2, 2), (4, 4), (64, 4)):
        monkeypatch.setattr(os, "cpu_count", lambda cpus=cpus: cpus)
        assert render_worker_count(Settings()) == expected
        assert gateway_worker_count(Settings()) == expected
    assert render_worker_count(Settings(render_workers=7)) == 7
    assert gateway_worker_count(Settings(gateway_workers=3)) == 3


@pytest.mark.parametrize(("gateways", "shared"), [(1, "false"), (2, "true")])
def test_gateways_share_the_port_only_when_there_are_several(gateways: int, shared: str) -> None:
    from tessera.supervisor import child_environment, process_names

    settings = Settings(gateway_workers=gateways, render_workers=1)
    names = [name for name, command in process_names(("gateway",), settings)]
    assert names == ["gateway", "gateway-2"][:gateways]
    assert child_environment(settings, "nats://127.0.0.1:4222")["TESSERA_REUSE_PORT"] == shared


def test_embedded_store_uses_process_locks() -> None:
    """One store process in embedded mode: no leases in NATS (``tessera store`` alone: cluster)."""
    from tessera.supervisor import child_environment

    assert Settings().instance_locks == "cluster"
    environment = child_environment(Settings(), "nats://127.0.0.1:4222")
    assert environment["TESSERA_INSTANCE_LOCKS"] == "process"
