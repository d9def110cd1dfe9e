"""HTTP observability: one SERVER span and one latency sample per request, and ``/metrics``.

The span continues the caller's trace (W3C ``traceparent`` from the request headers), and the
bus carries it on to the services, so one STOW, WADO or render request is one trace.

What is recorded is chosen for ARCHITECTURE invariant 10 (no PHI in traces or metrics): the
method, the route *template* (``/dicom-web/studies/{study}``), the status, the body size and
the path UIDs once they have been validated as UIDs. Never recorded: the query string (QIDO-RS
carries patient names, IDs and birth dates there, PS3.18 §8.3.4), the raw path of an unmatched
request, headers, bodies, and exception messages.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from contextlib import AbstractContextManager

from aiohttp import web
from aiohttp.typedefs import Handler
from opentelemetry import propagate, trace
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, Status, StatusCode, TraceFlags
from opentelemetry.util.types import AttributeValue

from tessera_common.errors import TesseraError
from tessera_common.metrics import HTTP_REQUEST_SECONDS, HTTP_REQUESTS_IN_FLIGHT, metrics_handler
from tessera_common.telemetry import tracer
from tessera_common.uid import InvalidUIDError, validate_uid

__all__ = ["METRICS_PATH", "add_metrics_route", "metrics_handler", "observability_middleware"]

METRICS_PATH = "/metrics"
UNMATCHED_ROUTE = "unmatched"
"""The ``route`` label of a request no route matched (404/405): its path is never recorded."""
CLIENT_CLOSED_REQUEST = 499
"""Status recorded when the client went away before the answer (nginx's convention)."""

UNTRACED_ROUTES = frozenset({"/healthz", "/readyz", METRICS_PATH})
"""Probes and scrapes arrive every few seconds: timed, but not traced (nor are the bus pings a
readiness probe sends)."""

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})

PATH_UID_ATTRIBUTES = {
    "study": "dicom.study_instance_uid",
    "series": "dicom.series_instance_uid",
    "instance": "dicom.sop_instance_uid",
}

_tracer = tracer("tessera.gateway.http")


def route_template(request: web.Request) -> str | None:
    """The matched route's template, e.g. ``/dicom-web/studies/{study}/series/{series}``."""
    route = request.match_info.route
    resource = route.resource if route is not None else None
    return resource.canonical if resource is not None else None


def method_label(method: str) -> str:
    """Methods outside the known set are one label value (OpenTelemetry's ``_OTHER``)."""
    return method if method in KNOWN_METHODS else "_OTHER"


def request_attributes(request: web.Request, route: str | None) -> dict[str, AttributeValue]:
    """Span attributes of a request: nothing a client can fill with free text."""
    attributes: dict[str, AttributeValue] = {
        "http.request.method": method_label(request.method),
        "url.scheme": request.scheme,
        "network.protocol.version": f"{request.version.major}.{request.version.minor}",
    }
    if route is not None:
        attributes["http.route"] = route
        for name, attribute in PATH_UID_ATTRIBUTES.items():
            value = request.match_info.get(name)
            if value is None:
                continue
            try:
                attributes[attribute] = validate_uid(value)
            except InvalidUIDError:
                continue
    if request.content_length is not None:
        attributes["http.request.body.size"] = request.content_length
    return attributes


@web.middleware
async def observability_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Trace and time every request. Put it first (outermost), before the error middleware,
    so it sees the status the client gets; it also copes with being inside it."""
    route = route_template(request)
    method = method_label(request.method)
    name = f"{method} {route}" if route is not None else method
    status = 500
    started = time.perf_counter()
    span_scope: AbstractContextManager[Span]
    if route in UNTRACED_ROUTES:
        span_scope = trace.use_span(_unsampled_span(), end_on_exit=False)
    else:
        span_scope = _tracer.start_as_current_span(
            name,
            context=propagate.extract(request.headers),
            kind=trace.SpanKind.SERVER,
            attributes=request_attributes(request, route),
            record_exception=False,
            set_status_on_exception=False,
        )
    with span_scope as span:
        HTTP_REQUESTS_IN_FLIGHT.inc()
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except TesseraError as exc:
            status = exc.http_status
            span.set_attribute("tessera.error", exc.code.value)
            raise
        except asyncio.CancelledError:
            status = CLIENT_CLOSED_REQUEST
            raise
        except Exception as exc:
            status = 500
            span.set_attribute("error.type", type(exc).__qualname__)
            raise
        finally:
            HTTP_REQUESTS_IN_FLIGHT.dec()
            _finish(span, status)
            HTTP_REQUEST_SECONDS.labels(route or UNMATCHED_ROUTE, method, str(status)).observe(
                time.perf_counter() - started
            )


def _unsampled_span() -> Span:
    """A parent that is not sampled: with the default parent-based sampler nothing under it
    is recorded."""
    context = SpanContext(
        trace_id=secrets.randbits(128) or 1,
        span_id=secrets.randbits(64) or 1,
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.DEFAULT),
    )
    return NonRecordingSpan(context)


def _finish(span: Span, status: int) -> None:
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        # OpenTelemetry HTTP conventions: on a server span only 5xx is an error.
        span.set_status(Status(StatusCode.ERROR))
        if not _has_error_type(span):
            span.set_attribute("error.type", str(status))


def _has_error_type(span: Span) -> bool:
    attributes = getattr(span, "attributes", None)  # SDK spans expose theirs; others don't
    return attributes is not None and "error.type" in attributes


def add_metrics_route(router: web.UrlDispatcher) -> None:
    """``GET /metrics`` (outside the DICOMweb base path, so a proxy can keep it private)."""
    router.add_get(METRICS_PATH, metrics_handler)
