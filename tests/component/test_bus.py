"""The bus against a real nats-server: request/reply in queue groups, errors as headers,
trace context propagation, durable events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from opentelemetry import trace

from tessera.natsd import NatsServer
from tessera_common.bus import ERROR_CODE_HEADER, Bus, WithPayload
from tessera_common.errors import ErrorCode, TesseraError
from tessera_common.messages import EVENTS_STREAM, Ping, Pong
from tessera_common.telemetry import setup_tracing, tracer


@pytest.fixture
async def bus(tmp_path: Path) -> AsyncIterator[Bus]:
    server = NatsServer(tmp_path)
    await server.start()
    connected = await Bus.connect(server.url, name="test", request_timeout=2)
    try:
        yield connected
    finally:
        await connected.close()
        await server.stop()


async def test_request_reply_in_a_queue_group(bus: Bus) -> None:
    served: list[str] = []

    def handler_for(name: str):  # type: ignore[no-untyped-def]
        async def handle(_: Ping) -> Pong:
            served.append(name)
            return Pong(service=name, ready=True)

        return handle

    await bus.serve("tessera.v1.test.ping", Ping, handler_for("a"), queue="test")
    await bus.serve("tessera.v1.test.ping", Ping, handler_for("b"), queue="test")
    replies = [await bus.request("tessera.v1.test.ping", Ping(), Pong) for _ in range(20)]
    assert len(served) == 20, "each request is served once by the queue group"
    assert {r.service for r in replies} == set(served)


async def test_replies_may_carry_raw_bytes(bus: Bus) -> None:
    """``WithPayload``: the message in a header, the bytes as they are (no base64)."""
    image = bytes(range(256)) * 1000

    async def handle(_: Ping) -> WithPayload:
        return WithPayload(Pong(service="render", ready=True), image)

    await bus.serve("tessera.v1.test.bytes", Ping, handle, queue="test")
    reply, payload = await bus.request_with_payload("tessera.v1.test.bytes", Ping(), Pong)
    assert reply == Pong(service="render", ready=True)
    assert payload == image
    assert await bus.request("tessera.v1.test.bytes", Ping(), Pong) == reply


async def test_errors_travel_as_headers(bus: Bus) -> None:
    async def refuse(_: Ping) -> Pong:
        raise TesseraError(ErrorCode.NOT_FOUND, "no such study\nsecond line")

    await bus.serve("tessera.v1.test.refuse", Ping, refuse, queue="test")
    with pytest.raises(TesseraError) as caught:
        await bus.request("tessera.v1.test.refuse", Ping(), Pong)
    assert caught.value.code is ErrorCode.NOT_FOUND
    assert caught.value.reason == "no such study second line"
    raw = await bus.client.request("tessera.v1.test.refuse", b"{}", timeout=2)
    assert raw.headers is not None and raw.headers[ERROR_CODE_HEADER] == "not-found"


async def test_unexpected_exception_is_internal_error_not_a_crash(bus: Bus) -> None:
    calls = 0

    async def crash(_: Ping) -> Pong:
        nonlocal calls
        calls += 1
        raise ZeroDivisionError("boom")

    await bus.serve("tessera.v1.test.crash", Ping, crash, queue="test")
    for _ in range(2):
        with pytest.raises(TesseraError) as caught:
            await bus.request("tessera.v1.test.crash", Ping(), Pong)
        assert caught.value.code is ErrorCode.INTERNAL
    assert calls == 2, "the subscription survives a failing handler"


async def test_malformed_message_gets_bad_request(bus: Bus) -> None:
    async def handle(_: Pong) -> Pong:
        raise AssertionError("not reached")

    await bus.serve("tessera.v1.test.strict", Pong, handle, queue="test")
    raw = await bus.client.request("tessera.v1.test.strict", b"not json", timeout=2)
    assert raw.headers is not None and raw.headers[ERROR_CODE_HEADER] == "bad-request"


async def test_no_responders_is_service_unavailable(
    bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tessera_common.bus.NO_RESPONDER_RETRY_SECONDS", 0.3)
    with pytest.raises(TesseraError) as caught:
        await bus.request("tessera.v1.nobody.ping", Ping(), Pong)
    assert caught.value.code is ErrorCode.SERVICE_UNAVAILABLE
    assert "nobody service is not running" in caught.value.reason


async def test_slow_handler_times_out(bus: Bus) -> None:
    async def slow(_: Ping) -> Pong:
        await asyncio.sleep(5)
        return Pong(service="slow", ready=True)

    await bus.serve("tessera.v1.test.slow", Ping, slow, queue="test")
    with pytest.raises(TesseraError) as caught:
        await bus.request("tessera.v1.test.slow", Ping(), Pong, timeout=0.3)
    assert caught.value.code is ErrorCode.TIMEOUT


async def test_trace_context_crosses_the_bus(bus: Bus) -> None:
    setup_tracing("tessera-test", environ={"OTEL_TRACES_SAMPLER": "always_on"})
    seen: list[int] = []

    async def handle(_: Ping) -> Pong:
        seen.append(trace.get_current_span().get_span_context().trace_id)
        return Pong(service="t", ready=True)

    await bus.serve("tessera.v1.test.trace", Ping, handle, queue="test")
    with tracer("test").start_as_current_span("client") as span:
        await bus.request("tessera.v1.test.trace", Ping(), Pong)
        expected = span.get_span_context().trace_id
    assert expected != 0
    assert seen == [expected]


async def test_events_are_durable_and_deduplicated(bus: Bus) -> None:
    await bus.ensure_streams()
    await bus.ensure_streams()  # idempotent
    event = Pong(service="x", ready=True)
    await bus.publish_event("tessera.v1.events.test.done", event, msg_id="same")
    await bus.publish_event("tessera.v1.events.test.done", event, msg_id="same")
    info = await bus.jetstream.stream_info(EVENTS_STREAM)
    assert info.state.messages == 1
