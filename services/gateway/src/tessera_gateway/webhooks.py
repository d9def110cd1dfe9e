"""Outbound webhooks: each change-feed entry POSTed to every configured URL, at least once.

Each URL has one durable JetStream pull consumer on ``TESSERA_EVENTS`` (``webhook-`` and a
digest of the URL), shared by every gateway replica: JetStream hands each event to one replica,
so an event is POSTed once per URL, not once per replica, and a URL that fails does not hold
the others back. A consumer is created on the first start with ``DeliverPolicy.NEW`` (older
events are in the change feed) and keeps its place across restarts.

A 2xx answer acknowledges the event. Anything else (another status, a redirect, a timeout, a
refused connection) is retried: the message is NAKed with a delay that doubles from
``TESSERA_WEBHOOK_BACKOFF_SECONDS`` up to ``…_BACKOFF_MAX_SECONDS``; after
``TESSERA_WEBHOOK_MAX_ATTEMPTS`` the event is given up with a log line (``term``). Deliveries
are signed with HMAC-SHA256 when ``TESSERA_WEBHOOK_SECRET`` is set (docs/EVENTS.md, Webhooks).
Logs name a URL by scheme, host and port only (its path or query may hold a token) and an
instance by its UIDs only (ARCHITECTURE invariant 10).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
import nats.errors
import orjson
from aiohttp import web
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from tessera_common.blobstore import BlobStore
from tessera_common.bus import Bus
from tessera_common.messages import EVENTS_STREAM
from tessera_common.settings import Settings

from .changefeed_log import ANY_EVENT, EventLog
from .changefeed_model import change_event
from .context import BLOBS, BUS, SETTINGS

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Tessera-Signature"
TIMESTAMP_HEADER = "Tessera-Timestamp"
SEQUENCE_HEADER = "Tessera-Sequence"
ATTEMPT_HEADER = "Tessera-Delivery-Attempt"
USER_AGENT = "Tessera-Webhooks/1"
FETCH_BATCH = 16
RESTART_SECONDS = 5.0
#: A consumer no gateway has read for this long is removed by JetStream (a URL taken out of
#: the configuration leaves no consumer behind for ever); as long as the stream's ``max_age``.
INACTIVE_THRESHOLD_SECONDS = 7 * 24 * 3600.0


class WebhookConfigError(ValueError):
    """A webhook setting that cannot be used."""


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    url: str

    @property
    def consumer(self) -> str:
        """The durable consumer's name: stable for the URL, free of ``.``, ``*`` and ``>``."""
        return "webhook-" + hashlib.sha256(self.url.encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        """The URL as logs may show it: scheme, host and port."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def webhook_targets(urls: list[str]) -> list[WebhookTarget]:
    """The configured URLs, checked: absolute ``http``/``https`` with a host, no user info."""
    targets: list[WebhookTarget] = []
    for url in urls:
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 (raises ValueError for a bad port)
        except ValueError as exc:
            raise WebhookConfigError(f"TESSERA_WEBHOOK_URLS: not a URL: {exc}") from exc
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise WebhookConfigError(
                "TESSERA_WEBHOOK_URLS: only absolute http:// or https:// URLs are allowed"
            )
        if parts.username is not None or parts.password is not None:
            raise WebhookConfigError(
                "TESSERA_WEBHOOK_URLS: credentials in a URL are not allowed; use the signature"
            )
        target = WebhookTarget(url)
        if target not in targets:
            targets.append(target)
    return targets


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=`` and the hex HMAC-SHA256 of ``timestamp``, ``.`` and the body, keyed by the
    secret (the timestamp is signed so that a captured delivery cannot be replayed later)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 8
    backoff: float = 2.0
    backoff_max: float = 300.0
    timeout: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            max_attempts=settings.webhook_max_attempts,
            backoff=settings.webhook_backoff_seconds,
            backoff_max=settings.webhook_backoff_max_seconds,
            timeout=settings.webhook_timeout_seconds,
        )

    def delay(self, attempt: int) -> float:
        """Seconds before attempt ``attempt + 1``."""
        return float(min(self.backoff * 2.0 ** max(attempt - 1, 0), self.backoff_max))


class WebhookSender:
    """Delivers the event stream to one URL through its durable consumer."""

    def __init__(
        self,
        bus: Bus,
        blobs: BlobStore,
        session: aiohttp.ClientSession,
        target: WebhookTarget,
        policy: RetryPolicy,
        secret: str | None,
    ) -> None:
        self._bus = bus
        self._js: JetStreamContext = bus.jetstream
        self._log = EventLog(bus.jetstream, blobs)
        self._session = session
        self._target = target
        self._policy = policy
        self._secret = secret
        self._subscription: JetStreamContext.PullSubscription | None = None

    async def subscribe(self) -> None:
        """Create (or bind to) the URL's consumer now, so that every event published once the
        gateway serves is delivered; a failure is logged and retried by ``run``."""
        try:
            self._subscription = await self._subscribe()
        except (nats.errors.Error, TimeoutError, OSError) as exc:
            log.warning(
                "webhook %s: no consumer yet (%s); retrying in the background",
                self._target.label,
                type(exc).__name__,
            )

    async def run(self) -> None:
        """Deliver until cancelled; a lost connection or stream is retried."""
        while True:
            try:
                subscription, self._subscription = self._subscription, None
                await self._consume(subscription or await self._subscribe())
            except (nats.errors.Error, TimeoutError, OSError) as exc:
                log.warning(
                    "webhook %s: event stream unavailable (%s); retrying in %g s",
                    self._target.label,
                    type(exc).__name__,
                    RESTART_SECONDS,
                )
            except Exception:
                log.exception("webhook %s: delivery loop failed", self._target.label)
            await asyncio.sleep(RESTART_SECONDS)

    async def _subscribe(self) -> JetStreamContext.PullSubscription:
        """Create the URL's consumer, or update the one that exists to the current retry
        settings (its deliver policy and position are kept), and bind to it."""
        await self._bus.ensure_streams()
        name = self._target.consumer
        config = ConsumerConfig(
            name=name,
            durable_name=name,
            description=f"webhook deliveries to {self._target.label}",
            deliver_policy=DeliverPolicy.NEW,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self._policy.timeout + 30.0,
            max_deliver=self._policy.max_attempts,
            filter_subject=ANY_EVENT,
            inactive_threshold=INACTIVE_THRESHOLD_SECONDS,
        )
        await self._js.add_consumer(EVENTS_STREAM, config)
        return await self._js.pull_subscribe_bind(durable=name, stream=EVENTS_STREAM)

    async def _consume(self, subscription: JetStreamContext.PullSubscription) -> None:
        try:
            while True:
                try:
                    messages = await subscription.fetch(batch=FETCH_BATCH, timeout=5)
                except nats.errors.TimeoutError:
                    # nats-py may turn a cancellation during fetch into a timeout; honour it.
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        raise asyncio.CancelledError from None
                    continue
                await asyncio.gather(*(self._deliver(message) for message in messages))
        finally:
            with contextlib.suppress(nats.errors.Error):
                await subscription.unsubscribe()

    async def _deliver(self, message: Msg) -> None:
        meta = message.metadata
        event = change_event(meta.sequence.stream, meta.timestamp, message.subject, message.data)
        if event is None:
            await message.ack()  # not an instance change: nothing to deliver
            return
        attempt = meta.num_delivered
        try:
            body = orjson.dumps(await self._log.document(event))
            status = await self._post(body, event.sequence, attempt)
            failure = None if 200 <= status < 300 else f"HTTP {status}"
        except Exception as exc:  # the receiver, or the sidecar lookup: retried either way
            failure = type(exc).__name__
        if failure is None:
            await message.ack()
            log.debug("webhook %s: delivered event %d", self._target.label, event.sequence)
            return
        if attempt >= self._policy.max_attempts:
            await message.term()
            log.warning(
                "webhook %s: gave up on event %d (%s of SOP Instance %s) after %d attempts: %s",
                self._target.label,
                event.sequence,
                event.action.value,
                event.sop_uid,
                attempt,
                failure,
            )
            return
        delay = self._policy.delay(attempt)
        await message.nak(delay=delay)
        log.info(
            "webhook %s: event %d attempt %d failed (%s); retry in %g s",
            self._target.label,
            event.sequence,
            attempt,
            failure,
            delay,
        )

    async def _post(self, body: bytes, sequence: int, attempt: int) -> int:
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            TIMESTAMP_HEADER: timestamp,
            SEQUENCE_HEADER: str(sequence),
            ATTEMPT_HEADER: str(attempt),
        }
        if self._secret:
            headers[SIGNATURE_HEADER] = signature(self._secret, timestamp, body)
        async with self._session.post(
            self._target.url, data=body, headers=headers, allow_redirects=False
        ) as response:
            await response.read()
            return response.status


async def deliver_webhooks(app: web.Application) -> AsyncIterator[None]:
    """The gateway's webhook senders (``cleanup_ctx``; after the bus is connected)."""
    settings = app[SETTINGS]
    if not settings.webhook_urls:
        yield
        return
    targets = webhook_targets(settings.webhook_urls)
    if not settings.webhook_secret:
        log.warning("TESSERA_WEBHOOK_SECRET is not set: webhook deliveries are not signed")
    policy = RetryPolicy.from_settings(settings)
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=policy.timeout))
    senders = [
        WebhookSender(app[BUS], app[BLOBS], session, target, policy, settings.webhook_secret)
        for target in targets
    ]
    await asyncio.gather(*(sender.subscribe() for sender in senders))
    tasks = [asyncio.create_task(sender.run()) for sender in senders]
    log.info("delivering change-feed webhooks to %s", ", ".join(t.label for t in targets))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await session.close()
