"""The message bus on nats-py: request/reply in queue groups and durable JetStream events.

Every request and event carries the W3C trace context in its headers, and every request,
handler and publication is timed into the ``tessera_bus_*`` Prometheus histograms
(``metrics.py``) by subject and outcome. A handler's
``TesseraError`` travels back as headers (``Tessera-Error-Code`` / ``Tessera-Error-Reason``,
in the manner of ``Nats-Service-Error-Code``) and is raised again on the requesting side, so the
gateway can answer with the right HTTP status.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import nats
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode
from pydantic import ValidationError

from .errors import ErrorCode, TesseraError
from .messages import EVENTS_STREAM, EVENTS_SUBJECTS, Message
from .metrics import (
    BUS_HANDLER_SECONDS,
    BUS_HANDLERS_IN_FLIGHT,
    BUS_PUBLISH_SECONDS,
    BUS_REQUEST_SECONDS,
    OUTCOME_OK,
)
from .telemetry import extract_context, inject_headers, tracer

ERROR_CODE_HEADER = "Tessera-Error-Code"
ERROR_REASON_HEADER = "Tessera-Error-Reason"
#: A reply that carries bytes (``WithPayload``) sends its message in this header instead.
MESSAGE_HEADER = "Tessera-Message"
NO_RESPONDER_RETRY_SECONDS = 5.0

ReqT = TypeVar("ReqT", bound=Message)
RepT = TypeVar("RepT", bound=Message)


@dataclass(frozen=True, slots=True)
class WithPayload:
    """A reply and raw bytes sent as the NATS payload (the message travels in a header):
    small binary results such as rendered images, without base64 and JSON around them. The
    caller keeps the whole reply far below the NATS payload limit (invariant 6)."""

    message: Message
    payload: bytes


Handler = Callable[[ReqT], Awaitable[Message | WithPayload]]

log = logging.getLogger(__name__)


def service_of(subject: str) -> str:
    """``tessera.v1.store.ingest`` -> ``store``."""
    parts = subject.split(".")
    return parts[2] if len(parts) > 2 else subject


def _span_attributes(subject: str, operation: str) -> dict[str, str]:
    """OpenTelemetry messaging attributes; the subject names a verb, never a UID."""
    return {
        "messaging.system": "nats",
        "messaging.destination.name": str(subject),
        "messaging.operation.type": operation,
    }


def _outcome(exc: BaseException) -> str:
    """The ``outcome`` metric label of a failure: a bounded set of names."""
    if isinstance(exc, TesseraError):
        return exc.code.value
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return "exception"


def _mark_error(span: Span, code: ErrorCode) -> None:
    """Record an error code on a span (never the reason: it may quote the request); only
    server-side failures (5xx) make the span an error."""
    span.set_attribute("tessera.error", code.value)
    if code.http_status >= 500:
        span.set_status(Status(StatusCode.ERROR, code.value))


class Bus:
    """A connected NATS client with Tessera's conventions."""

    def __init__(self, nc: NatsClient, *, request_timeout: float) -> None:
        self._nc = nc
        self._js: JetStreamContext = nc.jetstream()
        self._timeout = request_timeout
        self._tasks: set[asyncio.Task[None]] = set()
        self._tracer = tracer("tessera.bus")

    @classmethod
    async def connect(
        cls, url: str, *, name: str, request_timeout: float = 60.0, connect_timeout: float = 10.0
    ) -> Bus:
        """Connect, retrying until ``connect_timeout`` so services may start before NATS."""
        deadline = time.monotonic() + connect_timeout
        while True:
            try:
                nc = await nats.connect(
                    servers=[url],
                    name=name,
                    connect_timeout=2,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    allow_reconnect=True,
                )
                return cls(nc, request_timeout=request_timeout)
            except (OSError, nats.errors.NoServersError, nats.errors.TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    @property
    def client(self) -> NatsClient:
        return self._nc

    @property
    def jetstream(self) -> JetStreamContext:
        return self._js

    @property
    def connected(self) -> bool:
        return bool(self._nc.is_connected)

    async def ensure_streams(self, replicas: int = 1) -> None:
        """Create the durable event stream (JetStream file storage) if it does not exist,
        with ``replicas`` copies (``TESSERA_STREAM_REPLICAS``: 3 on a NATS cluster)."""
        config = StreamConfig(
            name=EVENTS_STREAM,
            subjects=list(EVENTS_SUBJECTS),
            storage=StorageType.FILE,
            max_age=7 * 24 * 3600,
            num_replicas=replicas,
        )
        try:
            await self._js.stream_info(EVENTS_STREAM)
        except nats.js.errors.NotFoundError:
            await self._js.add_stream(config)

    async def request(
        self,
        subject: str,
        message: Message,
        reply_type: type[RepT],
        *,
        timeout: float | None = None,
    ) -> RepT:
        """Send ``message`` to the queue group serving ``subject`` and parse the reply.

        A service that is restarting is waited for briefly (no responders is safe to retry:
        the request was never delivered). Raises ``TesseraError`` for remote errors,
        ``SERVICE_UNAVAILABLE`` when nobody serves the subject and ``TIMEOUT`` when no reply
        comes in time.
        """
        reply, _ = await self.request_with_payload(subject, message, reply_type, timeout=timeout)
        return reply

    async def request_with_payload(
        self,
        subject: str,
        message: Message,
        reply_type: type[RepT],
        *,
        timeout: float | None = None,
    ) -> tuple[RepT, bytes]:
        """``request``, for handlers that may answer ``WithPayload``: the reply and its bytes
        (empty when the handler sent a plain message)."""
        payload = message.model_dump_json().encode()
        timeout = timeout or self._timeout
        started = time.perf_counter()
        deadline = time.monotonic() + NO_RESPONDER_RETRY_SECONDS
        outcome = OUTCOME_OK
        with self._tracer.start_as_current_span(
            str(subject),  # a Subject member names the span as text
            kind=trace.SpanKind.CLIENT,
            attributes=_span_attributes(subject, "send"),
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                headers = inject_headers({})
                while True:
                    try:
                        reply = await self._nc.request(
                            subject, payload, timeout=timeout, headers=headers
                        )
                        break
                    except nats.errors.NoRespondersError as exc:
                        if time.monotonic() > deadline:
                            raise TesseraError(
                                ErrorCode.SERVICE_UNAVAILABLE,
                                f"the {service_of(subject)} service is not running; retry later",
                            ) from exc
                        await asyncio.sleep(0.1)
                    except nats.errors.TimeoutError as exc:
                        raise TesseraError(
                            ErrorCode.TIMEOUT,
                            f"the {service_of(subject)} service did not answer within "
                            f"{timeout:g} s",
                        ) from exc
                return self._parse_reply(reply, reply_type)
            except BaseException as exc:
                outcome = _outcome(exc)
                if isinstance(exc, TesseraError):
                    _mark_error(span, exc.code)
                elif not isinstance(exc, asyncio.CancelledError):
                    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise
            finally:
                BUS_REQUEST_SECONDS.labels(subject, outcome).observe(time.perf_counter() - started)

    @staticmethod
    def _parse_reply(reply: Msg, reply_type: type[RepT]) -> tuple[RepT, bytes]:
        headers = reply.headers or {}
        code = headers.get(ERROR_CODE_HEADER)
        if code is not None:
            try:
                error_code = ErrorCode(code)
            except ValueError:
                error_code = ErrorCode.INTERNAL
            raise TesseraError(error_code, headers.get(ERROR_REASON_HEADER, "remote error"))
        attached = headers.get(MESSAGE_HEADER)
        if attached is not None:
            return reply_type.model_validate_json(attached), reply.data
        return reply_type.model_validate_json(reply.data), b""

    async def serve(
        self,
        subject: str,
        request_type: type[ReqT],
        handler: Handler[ReqT],
        *,
        queue: str,
        concurrency: int = 16,
    ) -> None:
        """Answer ``subject`` in queue group ``queue``, up to ``concurrency`` at a time."""
        limit = asyncio.Semaphore(concurrency)

        async def on_message(msg: Msg) -> None:
            await limit.acquire()
            task = asyncio.create_task(self._handle(msg, request_type, handler, limit))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        await self._nc.subscribe(subject, queue=queue, cb=on_message)

    async def _handle(
        self,
        msg: Msg,
        request_type: type[ReqT],
        handler: Handler[ReqT],
        limit: asyncio.Semaphore,
    ) -> None:
        started = time.perf_counter()
        outcome = OUTCOME_OK
        in_flight = BUS_HANDLERS_IN_FLIGHT.labels(msg.subject)
        in_flight.inc()
        try:
            context = extract_context(msg.headers)
            with self._tracer.start_as_current_span(
                msg.subject,
                context=context,
                kind=trace.SpanKind.SERVER,
                attributes=_span_attributes(msg.subject, "process"),
            ) as span:
                try:
                    request = request_type.model_validate_json(msg.data)
                    reply = await handler(request)
                except ValidationError as exc:
                    outcome = ErrorCode.BAD_REQUEST.value
                    _mark_error(span, ErrorCode.BAD_REQUEST)
                    await self._reply_error(
                        msg, ErrorCode.BAD_REQUEST, f"malformed {msg.subject} message: {exc}"
                    )
                    return
                except TesseraError as exc:
                    outcome = exc.code.value
                    _mark_error(span, exc.code)
                    await self._reply_error(msg, exc.code, exc.reason)
                    return
                except Exception as exc:
                    outcome = ErrorCode.INTERNAL.value
                    log.exception("handler for %s failed", msg.subject)
                    span.record_exception(exc)
                    await self._reply_error(
                        msg, ErrorCode.INTERNAL, f"{type(exc).__name__} while serving request"
                    )
                    return
                if not msg.reply:
                    return
                if isinstance(reply, WithPayload):
                    header = reply.message.model_dump_json()
                    await self._nc.publish(
                        msg.reply, reply.payload, headers={MESSAGE_HEADER: header}
                    )
                else:
                    await self._nc.publish(msg.reply, reply.model_dump_json().encode())
        except BaseException as exc:
            outcome = _outcome(exc)
            raise
        finally:
            in_flight.dec()
            BUS_HANDLER_SECONDS.labels(msg.subject, outcome).observe(time.perf_counter() - started)
            limit.release()

    async def _reply_error(self, msg: Msg, code: ErrorCode, reason: str) -> None:
        if not msg.reply:
            return
        # Header values must stay on one line.
        reason = " ".join(reason.split())[:1000]
        await self._nc.publish(
            msg.reply, b"", headers={ERROR_CODE_HEADER: code.value, ERROR_REASON_HEADER: reason}
        )

    async def publish_event(self, subject: str, message: Message, *, msg_id: str) -> None:
        """Publish a durable event; returns once JetStream has stored it.

        ``msg_id`` enables JetStream's duplicate window, so a retried publish is stored once.
        """
        started = time.perf_counter()
        outcome = OUTCOME_OK
        with self._tracer.start_as_current_span(
            str(subject),  # a Subject member names the span as text
            kind=trace.SpanKind.PRODUCER,
            attributes=_span_attributes(subject, "publish"),
            record_exception=False,
        ):
            try:
                headers = inject_headers({"Nats-Msg-Id": msg_id})
                await self._js.publish(
                    subject,
                    message.model_dump_json().encode(),
                    headers=headers,
                    timeout=self._timeout,
                )
            except BaseException as exc:
                outcome = _outcome(exc)
                raise
            finally:
                BUS_PUBLISH_SECONDS.labels(subject, outcome).observe(time.perf_counter() - started)

    async def close(self) -> None:
        """Let in-flight handlers finish, then drain and close the connection."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)
        if not self._nc.is_closed:
            await self._nc.drain()
