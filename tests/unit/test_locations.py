"""The gateway's memory of where instances are (``tessera_gateway.locations``): never used
for another path, dropped by events, by its own writes, by reconnection and by age, and never
filled by a locate that raced a change."""

from __future__ import annotations

import orjson
import pytest

from tessera_common.messages import LocatedInstance
from tessera_gateway.locations import Locations

STUDY, SERIES = "1.2.3", "1.2.3.4"


def located(sop_uid: str, sha: str = "ab" * 32) -> LocatedInstance:
    return LocatedInstance(
        study_uid=STUDY,
        series_uid=SERIES,
        sop_uid=sop_uid,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        object_key=f"objects/{sha}",
        sidecar_key=f"studies/{STUDY}/series/{SERIES}/instances/{sop_uid}.json",
        size=100,
        sha256=sha,
    )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_remembered_only_for_its_own_path() -> None:
    locations = Locations()
    locations.put(located("1.1"), locations.generation)
    assert locations.get(STUDY, SERIES, "1.1") == located("1.1")
    assert locations.get(STUDY, None, "1.1") == located("1.1")  # WADO-URI gives all three
    assert locations.get("9.9", SERIES, "1.1") is None
    assert locations.get(STUDY, "9.9", "1.1") is None
    assert locations.get(STUDY, SERIES, "1.2") is None


@pytest.mark.parametrize(
    "event",
    [
        {"study_uid": STUDY, "series_uid": SERIES, "sop_uid": "1.1", "sha256": "cd" * 32},
        {"sop_uid": "1.1", "deleted_at": "2026-11-23T00:00:00Z"},
    ],
    ids=["stored-again", "deleted"],
)
def test_an_event_drops_its_instance_only(event: dict[str, str]) -> None:
    locations = Locations()
    for sop in ("1.1", "1.2"):
        locations.put(located(sop), locations.generation)
    locations.on_event(orjson.dumps(event))
    assert locations.get(STUDY, SERIES, "1.1") is None
    assert locations.get(STUDY, SERIES, "1.2") is not None


@pytest.mark.parametrize(
    "data", [b"not json", b"[]", b'{"study_uid": "1.2.3"}', b'{"sop_uid": 7}'], ids=repr
)
def test_an_unreadable_event_drops_everything(data: bytes) -> None:
    locations = Locations()
    locations.put(located("1.1"), locations.generation)
    locations.on_event(data)
    assert len(locations) == 0


def test_a_locate_that_raced_a_change_is_not_remembered() -> None:
    locations = Locations()
    started = locations.generation
    locations.forget(["7.7"])  # any change while the locate was in flight
    locations.put(located("1.1"), started)
    assert locations.get(STUDY, SERIES, "1.1") is None
    locations.put(located("1.1"), locations.generation)
    assert locations.get(STUDY, SERIES, "1.1") is not None


def test_reconnection_drops_everything() -> None:
    reconnects = [0]
    locations = Locations(epoch=lambda: reconnects[0])
    locations.put(located("1.1"), locations.generation)
    reconnects[0] = 1  # events may have been missed while disconnected
    assert locations.get(STUDY, SERIES, "1.1") is None
    assert len(locations) == 0


def test_entries_expire_and_the_oldest_go_first() -> None:
    clock = Clock()
    locations = Locations(capacity=2, ttl=30, clock=clock)
    for sop in ("1.1", "1.2"):
        locations.put(located(sop), locations.generation)
    assert locations.get(STUDY, SERIES, "1.1") is not None  # now the most recent
    locations.put(located("1.3"), locations.generation)
    assert locations.get(STUDY, SERIES, "1.2") is None
    assert locations.get(STUDY, SERIES, "1.1") is not None
    clock.now = 31
    assert locations.get(STUDY, SERIES, "1.3") is None
