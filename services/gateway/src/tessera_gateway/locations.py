"""Where single instances are stored, remembered by the gateway, so that a request for one
instance (a frame, above all) skips the ``query.locate`` round trip.

An entry must never outlive the instance it describes:

* the store publishes ``tessera.v1.events.instance.stored`` and ``.deleted`` before it answers
  (docs/EVENTS.md); every gateway replica listens to them on plain NATS and drops the entry of
  the SOP Instance UID they name (an event it cannot read drops everything). That happens
  within moments, but not necessarily before the store's answer reaches this gateway: nats.py
  runs each subscription's callbacks in a task of its own;
* so this gateway drops what its own STOW-RS and DELETE touched as soon as they answer:
  read-your-writes through one gateway does not depend on event delivery. Through another
  gateway, a read in the moment before its event arrives can still find the old location, the
  same window a read already had when its locate answered just before a replacement; on a
  local store ``instances.locate_one`` also checks the object's size before using an entry;
* a locate that began before a change is not remembered (every drop bumps a generation, which
  ``put`` compares with the one its locate started under);
* events missed while the NATS connection was down are covered by dropping everything when
  the connection's reconnect count changes;
* no entry is used after ``ttl`` seconds.

Only found instances are remembered; a miss always asks the query service.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import orjson
from aiohttp import web
from nats.aio.msg import Msg

from tessera_common.bus import Bus
from tessera_common.lru import Lru
from tessera_common.messages import LocatedInstance

log = logging.getLogger(__name__)

#: The subjects whose events change where an instance is (or whether it is).
INSTANCE_EVENTS = "tessera.v1.events.instance.>"


@dataclass(slots=True)
class _Entry:
    instance: LocatedInstance
    expires: float


class Locations:
    """A bounded LRU of located instances by SOP Instance UID (see the module docstring)."""

    def __init__(
        self,
        *,
        capacity: int = 50_000,
        ttl: float = 30.0,
        epoch: Callable[[], int] = lambda: 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._entries: Lru[str, _Entry] = Lru(capacity)
        self._ttl = ttl
        self._epoch = epoch
        self._seen_epoch = epoch()
        self._clock = clock
        self.generation = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, study_uid: str, series_uid: str | None, sop_uid: str) -> LocatedInstance | None:
        """The instance at this path, if remembered and still valid."""
        self._check_epoch()
        entry = self._entries.get(sop_uid)
        if entry is None:
            return None
        if entry.expires < self._clock():
            self._entries.pop(sop_uid)
            return None
        instance = entry.instance
        if instance.study_uid != study_uid or series_uid not in (None, instance.series_uid):
            return None  # another path: let the query service answer (404)
        return instance

    def put(self, instance: LocatedInstance, generation: int) -> None:
        """Remember ``instance``, located under ``generation``, unless something was dropped
        since then."""
        self._check_epoch()
        if generation != self.generation:
            return
        self._entries.put(instance.sop_uid, _Entry(instance, self._clock() + self._ttl))

    def forget(self, sop_uids: Iterable[str]) -> None:
        self.generation += 1
        for sop_uid in sop_uids:
            self._entries.pop(sop_uid)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()

    def on_event(self, data: bytes) -> None:
        """Drop what an instance event names (everything, if it cannot be read)."""
        try:
            sop_uid = orjson.loads(data)["sop_uid"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self.clear()
            return
        if isinstance(sop_uid, str):
            self.forget([sop_uid])
        else:
            self.clear()

    def _check_epoch(self) -> None:
        epoch = self._epoch()
        if epoch != self._seen_epoch:
            self._seen_epoch = epoch
            self.clear()


LOCATIONS = web.AppKey("locations", Locations)


async def watch(bus: Bus) -> Locations:
    """A ``Locations`` kept current by the instance events on ``bus``."""
    locations = Locations(epoch=lambda: int(bus.client.stats["reconnects"]))

    async def on_message(msg: Msg) -> None:
        locations.on_event(msg.data)

    await bus.client.subscribe(INSTANCE_EVENTS, cb=on_message)
    return locations
