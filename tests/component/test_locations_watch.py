"""The gateway's ``Locations`` follow the instance events on a real nats-server: an event the
store published before answering has been applied by the time its answer reaches the gateway,
so a gateway never serves a location the store has already changed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.msg import Msg

from tessera.natsd import NatsServer
from tessera_common.bus import Bus
from tessera_common.messages import (
    InstanceDeletedEvent,
    InstanceStoredEvent,
    LocatedInstance,
    Message,
    Subject,
)
from tessera_gateway.locations import watch

STUDY, SERIES, SOP = "1.2.3", "1.2.3.4", "1.2.3.4.5"
CT = "1.2.840.10008.5.1.4.1.1.2"
NOW = "2026-11-23T00:00:00+00:00"


@pytest.fixture
async def buses(tmp_path: Path) -> AsyncIterator[tuple[Bus, Bus]]:
    server = NatsServer(tmp_path)
    await server.start()
    gateway = await Bus.connect(server.url, name="gateway", request_timeout=2)
    store = await Bus.connect(server.url, name="store", request_timeout=2)
    try:
        await store.ensure_streams()
        yield gateway, store
    finally:
        await gateway.close()
        await store.close()
        await server.stop()


def located(sha: str) -> LocatedInstance:
    return LocatedInstance(
        study_uid=STUDY,
        series_uid=SERIES,
        sop_uid=SOP,
        sop_class_uid=CT,
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        object_key=f"objects/{sha}",
        sidecar_key="sidecar",
        size=1,
        sha256=sha,
    )


EVENTS = [
    pytest.param(
        Subject.EVENT_INSTANCE_STORED,
        InstanceStoredEvent(
            study_uid=STUDY,
            series_uid=SERIES,
            sop_uid=SOP,
            sop_class_uid=CT,
            sidecar_key="sidecar",
            sha256="cd" * 32,
            stored_at=NOW,
        ),
        id="replaced",
    ),
    pytest.param(
        Subject.EVENT_INSTANCE_DELETED,
        InstanceDeletedEvent(
            study_uid=STUDY,
            series_uid=SERIES,
            sop_uid=SOP,
            sop_class_uid=CT,
            sha256="ab" * 32,
            deleted_at=NOW,
        ),
        id="deleted",
    ),
]


@pytest.mark.parametrize(("subject", "event"), EVENTS)
async def test_event_is_applied_before_the_answer_that_follows_it(
    buses: tuple[Bus, Bus], subject: Subject, event: Message
) -> None:
    gateway, store = buses
    locations = await watch(gateway)
    locations.put(located("ab" * 32), locations.generation)
    seen_at_answer: list[bool] = []
    answered = asyncio.Event()

    async def on_answer(_: Msg) -> None:
        seen_at_answer.append(locations.get(STUDY, SERIES, SOP) is not None)
        answered.set()

    await gateway.client.subscribe("test.answer", cb=on_answer)
    await gateway.client.flush()
    # As the store does: the durable event first, then the answer to the gateway.
    await store.publish_event(subject, event, msg_id=f"{SOP}:{subject}")
    await store.client.publish("test.answer", b"done")
    await asyncio.wait_for(answered.wait(), 5)
    assert seen_at_answer == [False]


async def test_other_instances_stay(buses: tuple[Bus, Bus]) -> None:
    gateway, store = buses
    locations = await watch(gateway)
    other = located("ab" * 32).model_copy(update={"sop_uid": "1.2.3.4.6"})
    locations.put(other, locations.generation)
    deleted = EVENTS[1].values[1]
    assert isinstance(deleted, Message)
    await store.publish_event(Subject.EVENT_INSTANCE_DELETED, deleted, msg_id="x")
    await gateway.client.flush()
    await asyncio.sleep(0.1)
    assert locations.get(STUDY, SERIES, "1.2.3.4.6") == other
