"""Tracing: one trace per request across gateway and services.

W3C trace context (``traceparent``/``tracestate``) travels in NATS message headers, injected
by the bus on every request and event and extracted by the serving side.

Export is configured by the standard OpenTelemetry environment variables, so one image runs
with or without a collector:

======================================  ==========================================================
``OTEL_TRACES_EXPORTER``                ``otlp``, ``console`` (stderr, for debugging) or ``none``;
                                        a comma-separated list is allowed. Unset: ``otlp`` when an
                                        OTLP endpoint is set, otherwise ``none``
``OTEL_EXPORTER_OTLP_ENDPOINT``         collector base URL, e.g. ``http://otel-collector:4318``
                                        (``/v1/traces`` is appended)
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``  the full traces URL; wins over the base URL
``OTEL_SERVICE_NAME``                   replaces the name the service passes to ``setup_tracing``
``OTEL_SDK_DISABLED=true``              no SDK: spans are no-ops and carry no ids
``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*``,  read by the SDK itself (sampling, batching, headers,
``OTEL_EXPORTER_OTLP_HEADERS`` …        timeouts, TLS)
======================================  ==========================================================

Only OTLP over HTTP/protobuf (collector port 4318) is shipped. Nothing is exported unless one
of the variables above asks for it: embedded mode and the tests never open a connection.

*Choice:* unlike the SDK's own default (``otlp`` always), an unset exporter exports nothing,
so a laptop without a collector does not log a failed export every few seconds. Without an
exporter spans are not recorded either (sampler ``always_off`` unless ``OTEL_TRACES_SAMPLER``
says otherwise); they keep their trace and span ids, for the logs and for propagation.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, Sampler

log = logging.getLogger(__name__)

EXPORTERS = frozenset({"otlp", "console", "none"})
OTLP_TRACES_PATH = "/v1/traces"

_configured = False


@dataclass(frozen=True, slots=True)
class TracingConfig:
    """What ``setup_tracing`` installs, decided from the environment alone."""

    service_name: str
    exporters: tuple[str, ...] = ()
    otlp_endpoint: str | None = None
    disabled: bool = False
    problems: tuple[str, ...] = ()


def tracing_config(service_name: str, environ: Mapping[str, str]) -> TracingConfig:
    """Read the standard ``OTEL_*`` variables (see the module docstring); never raises.

    Values we cannot honour are reported in ``problems`` and ignored.
    """
    name = environ.get("OTEL_SERVICE_NAME", "").strip() or service_name
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return TracingConfig(service_name=name, disabled=True)
    problems: list[str] = []
    endpoint = _otlp_traces_endpoint(environ)
    requested = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if requested:
        names = [part.strip() for part in requested.split(",") if part.strip()]
    else:
        names = ["otlp"] if endpoint else []
    exporters: list[str] = []
    for exporter in names:
        if exporter not in EXPORTERS:
            problems.append(f"OTEL_TRACES_EXPORTER={exporter!r} is not supported; ignored")
        elif exporter != "none" and exporter not in exporters:
            exporters.append(exporter)
    if "none" in names:
        exporters = []
    protocol = environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
    ).strip()
    if "otlp" in exporters and protocol not in ("", "http/protobuf"):
        problems.append(f"OTLP protocol {protocol!r} is not shipped; using http/protobuf")
    if "otlp" in exporters and endpoint is None:
        endpoint = "http://localhost:4318" + OTLP_TRACES_PATH  # the specification's default
    return TracingConfig(
        service_name=name,
        exporters=tuple(exporters),
        otlp_endpoint=endpoint if "otlp" in exporters else None,
        problems=tuple(problems),
    )


def _otlp_traces_endpoint(environ: Mapping[str, str]) -> str | None:
    traces = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if traces:
        return traces
    base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if base:
        return base.rstrip("/") + OTLP_TRACES_PATH
    return None


def setup_tracing(service_name: str, *, environ: Mapping[str, str] | None = None) -> None:
    """Install an SDK tracer provider so spans carry real trace ids, exporting as configured.

    Called once per process by every service; later calls do nothing. Spans are batched
    (``BatchSpanProcessor``) and flushed when the process exits.
    """
    global _configured
    if _configured:
        return
    _configured = True
    config = tracing_config(service_name, os.environ if environ is None else environ)
    for problem in config.problems:
        log.warning("tracing: %s", problem)
    if config.disabled:
        return
    resource = Resource.create({SERVICE_NAME: config.service_name, "service.namespace": "tessera"})
    provider = TracerProvider(resource=resource, sampler=sampler(config, environ or os.environ))
    for name in config.exporters:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name, config)))
    trace.set_tracer_provider(provider)
    if config.exporters:
        targets = [
            f"OTLP {config.otlp_endpoint}" if name == "otlp" else "stderr"
            for name in config.exporters
        ]
        log.info("tracing: %s exports spans to %s", config.service_name, ", ".join(targets))


def sampler(config: TracingConfig, environ: Mapping[str, str]) -> Sampler | None:
    """With nowhere to export, spans are not recorded (they still get ids, which propagate and
    appear in the logs): recording costs about a tenth of a service's CPU on small requests.
    ``None`` leaves the choice to the SDK (``OTEL_TRACES_SAMPLER``, else parent-based on)."""
    if config.exporters or environ.get("OTEL_TRACES_SAMPLER"):
        return None
    return ALWAYS_OFF


def _exporter(name: str, config: TracingConfig) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter(service_name=config.service_name)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=config.otlp_endpoint)


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def inject_headers(headers: dict[str, str]) -> dict[str, str]:
    """Add the current trace context to ``headers`` and return them."""
    propagate.inject(headers)
    return headers


def extract_context(headers: Mapping[str, str] | None) -> Context:
    return propagate.extract(dict(headers or {}))


class TraceContextFilter(logging.Filter):
    """Adds ``trace_id`` and ``span_id`` (hex, or ``-`` outside a span) to every log record,
    so a log line can be found from its trace and the other way round.

    Install on a handler: ``handler.addFilter(TraceContextFilter())`` and use
    ``%(trace_id)s`` in the format (or the attribute in a JSON formatter).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = format(context.trace_id, "032x")
            record.span_id = format(context.span_id, "016x")
        else:
            record.trace_id = "-"
            record.span_id = "-"
        return True
