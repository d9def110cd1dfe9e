"""The audit trail: one ``AuditEvent`` per access, logged and published on NATS.

*Who* is the authenticated subject (``sub``, or ``apikey:<key id>``), *what* the method, the
route template and the path UIDs once validated, *outcome* the status and duration. Nothing a
client writes as free text is recorded: not the query string (QIDO-RS carries patient names,
IDs and birth dates there, PS3.18 §8.3.4), not the raw path of an unmatched request, no header,
no body (ARCHITECTURE invariant 10).

Durability. Audit records are a compliance record (HIPAA §164.312(b) asks for audit controls;
IHE ATNA ships them to a repository), so they are published with JetStream acknowledgements
into their own file-backed stream ``TESSERA_AUDIT`` (subject ``tessera.v1.audit.access``), with
a retention of its own (``TESSERA_AUDIT_MAX_AGE_DAYS`` / ``_MAX_BYTES``), from which a SIEM
shipper reads with a durable consumer. They are kept out of ``tessera.v1.events.>``: that
stream's consumers (the query service) replay instance events and must not wade through one
audit event per frame request, and JetStream refuses overlapping stream subjects anyway.

Requests never wait for the audit trail: events go through a bounded queue to one publisher
task, which keeps their order. A message carries the events queued within ``LINGER_SECONDS``
of its first (at most ``BATCH_EVENTS``, about ``BATCH_BYTES``), one JSON object per line
(newline-delimited JSON; header ``Tessera-Audit-Events``: how many). One message and one
acknowledgement per request cost about a quarter of the frames a gateway serves per second,
mostly in the NATS server's stream writes. Every event is also written to the
``tessera.audit`` log at once, so an event that cannot be published (NATS down for longer than
the queue lasts) is still on record; such losses are counted in
``tessera_audit_events_total{result="dropped"|"failed"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Literal

import nats.errors
import nats.js.errors
from nats.js.api import DiscardPolicy, StorageType, StreamConfig
from opentelemetry import trace
from prometheus_client import Counter

from tessera_common.bus import Bus
from tessera_common.messages import AUDIT_STREAM, AUDIT_SUBJECT, AUDIT_SUBJECTS, AuditEvent
from tessera_common.settings import Settings
from tessera_common.uid import is_valid_uid

from .access import Principal, Scope

log = logging.getLogger(__name__)
audit_log = logging.getLogger("tessera.audit")

AUDIT_EVENTS = Counter(
    "tessera_audit_events",
    "Audit events by what became of them: published to NATS, dropped (queue full) or failed",
    ["result"],
)
QUEUE_SIZE = 10_000
PUBLISHERS = 1
#: Most events in one message, and the size after which no more are added.
BATCH_EVENTS = 2000
BATCH_BYTES = 512 * 1024
#: How long a publisher waits for more events before it publishes what it has.
LINGER_SECONDS = 0.05
COUNT_HEADER = "Tessera-Audit-Events"
PUBLISH_TIMEOUT = 5.0
UNMATCHED_ROUTE = "unmatched"
CLIENT_CLOSED_REQUEST = 499

_PATH_UIDS = {"study": "study_uid", "series": "series_uid", "instance": "sop_uid"}

Outcome = Literal["success", "denied", "client-error", "server-error", "cancelled"]


def outcome_of(status: int) -> Outcome:
    """The event's outcome class (PS3.15 §A.5.3's EventOutcomeIndicator, coarsely)."""
    if status == CLIENT_CLOSED_REQUEST:
        return "cancelled"
    if status in (401, 403):
        return "denied"
    if status >= 500:
        return "server-error"
    if status >= 400:
        return "client-error"
    return "success"


def audit_event(
    *,
    principal: Principal,
    action: Scope | None,
    method: str,
    route: str | None,
    path_params: Mapping[str, str],
    status: int,
    duration: float,
    source_address: str | None,
) -> AuditEvent:
    """The event of one request. ``path_params`` are the route's match info; only the UIDs
    among them are kept, and only when they are valid UIDs (invariant 9)."""
    uids = {
        field: value
        for name, field in _PATH_UIDS.items()
        if (value := path_params.get(name)) is not None and is_valid_uid(value)
    }
    span_context = trace.get_current_span().get_span_context()
    return AuditEvent(
        event_id=uuid.uuid4().hex,
        time=datetime.now(UTC).isoformat(timespec="milliseconds"),
        subject=principal.subject,
        auth_method=principal.method,
        client_id=principal.client_id,
        action=action.value if action is not None else None,
        method=method if method.isalpha() and len(method) <= 16 else "_OTHER",
        route=route if route is not None else UNMATCHED_ROUTE,
        status=status,
        outcome=outcome_of(status),
        duration_ms=round(duration * 1000, 3),
        source_address=source_address,
        trace_id=format(span_context.trace_id, "032x") if span_context.is_valid else None,
        **uids,
    )


class AuditTrail:
    """Logs each event and publishes it on ``AUDIT_SUBJECT`` in the background."""

    def __init__(
        self,
        bus: Bus | None,
        *,
        max_age_days: float = 90.0,
        max_bytes: int = 1024**3,
        queue_size: int = QUEUE_SIZE,
        replicas: int = 1,
    ) -> None:
        self._bus = bus
        self._max_age_days = max_age_days
        self._max_bytes = max_bytes
        self._replicas = replicas
        #: (event id, serialized event): serialized once, for the log line and the stream.
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(maxsize=queue_size)
        self._publishers: list[asyncio.Task[None]] = []
        self._durable = False

    @classmethod
    def from_settings(cls, settings: Settings, bus: Bus | None) -> AuditTrail:
        return cls(
            bus,
            max_age_days=settings.audit_max_age_days,
            max_bytes=settings.audit_max_bytes,
            replicas=settings.stream_replicas,
        )

    async def start(self) -> None:
        """Create the audit stream if needed and start the publishers."""
        if self._bus is None:
            log.warning("no NATS connection: audit events are only logged")
            return
        self._durable = await self._ensure_stream(self._bus)
        self._publishers = [
            asyncio.create_task(self._publish_forever(self._bus)) for _ in range(PUBLISHERS)
        ]

    def record(self, event: AuditEvent) -> None:
        """Log ``event`` now and queue it for publication; never blocks the request."""
        payload = event.model_dump_json(exclude_none=True)
        audit_log.info("audit %s", payload)
        if self._bus is None:
            return
        try:
            self._queue.put_nowait((event.event_id, payload.encode()))
        except asyncio.QueueFull:
            AUDIT_EVENTS.labels("dropped").inc()

    async def close(self, timeout: float = 5.0) -> None:
        """Publish what is queued (for at most ``timeout`` seconds), then stop."""
        if not self._publishers:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout)
        for task in self._publishers:
            task.cancel()
        await asyncio.gather(*self._publishers, return_exceptions=True)
        self._publishers = []

    async def _ensure_stream(self, bus: Bus) -> bool:
        config = StreamConfig(
            name=AUDIT_STREAM,
            subjects=list(AUDIT_SUBJECTS),
            storage=StorageType.FILE,
            max_age=self._max_age_days * 86400,
            max_bytes=self._max_bytes,
            discard=DiscardPolicy.OLD,
            num_replicas=self._replicas,
        )
        try:
            try:
                await bus.jetstream.stream_info(AUDIT_STREAM)
            except nats.js.errors.NotFoundError:
                await bus.jetstream.add_stream(config)
        except (nats.errors.Error, TimeoutError) as exc:
            log.warning(
                "no %s stream (%s): audit events are published unacknowledged",
                AUDIT_STREAM,
                exc,
            )
            return False
        return True

    async def _publish_forever(self, bus: Bus) -> None:
        while True:
            batch = [await self._queue.get()]
            # Let the events of the next moments join this one: under load a message then
            # carries dozens of events instead of one.
            await asyncio.sleep(LINGER_SECONDS)
            size = len(batch[0][1])
            while len(batch) < BATCH_EVENTS and size < BATCH_BYTES and not self._queue.empty():
                batch.append(self._queue.get_nowait())
                size += len(batch[-1][1]) + 1
            payload = b"\n".join(event for _, event in batch)
            headers = {COUNT_HEADER: str(len(batch))}
            try:
                if self._durable:
                    await bus.jetstream.publish(
                        AUDIT_SUBJECT, payload, timeout=PUBLISH_TIMEOUT, headers=headers
                    )
                else:
                    await bus.client.publish(AUDIT_SUBJECT, payload, headers=headers)
                AUDIT_EVENTS.labels("published").inc(len(batch))
            except (nats.errors.Error, TimeoutError) as exc:
                AUDIT_EVENTS.labels("failed").inc(len(batch))
                log.warning("%d audit events (%s…) not published: %s", len(batch), batch[0][0], exc)
            finally:
                for _ in batch:
                    self._queue.task_done()
