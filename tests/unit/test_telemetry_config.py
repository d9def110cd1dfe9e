"""Which exporter ``setup_tracing`` installs for a given ``OTEL_*`` environment."""

from __future__ import annotations

import logging

import pytest
from opentelemetry.sdk.trace import TracerProvider

from tessera_common.telemetry import TraceContextFilter, TracingConfig, sampler, tracing_config

COLLECTOR = "http://otel-collector:4318"

CASES = [
    pytest.param({}, TracingConfig("tessera-store"), id="nothing-set-exports-nothing"),
    pytest.param(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": COLLECTOR},
        TracingConfig("tessera-store", ("otlp",), f"{COLLECTOR}/v1/traces"),
        id="endpoint-alone-means-otlp",
    ),
    pytest.param(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": COLLECTOR + "/"},
        TracingConfig("tessera-store", ("otlp",), f"{COLLECTOR}/v1/traces"),
        id="trailing-slash",
    ),
    pytest.param(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": COLLECTOR,
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:4318/custom",
        },
        TracingConfig("tessera-store", ("otlp",), "http://traces:4318/custom"),
        id="traces-endpoint-wins",
    ),
    pytest.param(
        {"OTEL_TRACES_EXPORTER": "otlp"},
        TracingConfig("tessera-store", ("otlp",), "http://localhost:4318/v1/traces"),
        id="otlp-without-endpoint-uses-the-default",
    ),
    pytest.param(
        {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": COLLECTOR},
        TracingConfig("tessera-store"),
        id="none-wins",
    ),
    pytest.param(
        {"OTEL_TRACES_EXPORTER": "console"},
        TracingConfig("tessera-store", ("console",)),
        id="console",
    ),
    pytest.param(
        {"OTEL_TRACES_EXPORTER": "otlp, console", "OTEL_EXPORTER_OTLP_ENDPOINT": COLLECTOR},
        TracingConfig("tessera-store", ("otlp", "console"), f"{COLLECTOR}/v1/traces"),
        id="list",
    ),
    pytest.param(
        {"OTEL_TRACES_EXPORTER": "zipkin"},
        TracingConfig(
            "tessera-store", problems=("OTEL_TRACES_EXPORTER='zipkin' is not supported; ignored",)
        ),
        id="unknown-exporter-ignored",
    ),
    pytest.param(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": COLLECTOR, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
        TracingConfig(
            "tessera-store",
            ("otlp",),
            f"{COLLECTOR}/v1/traces",
            problems=("OTLP protocol 'grpc' is not shipped; using http/protobuf",),
        ),
        id="grpc-reported",
    ),
    pytest.param(
        {"OTEL_SERVICE_NAME": "store-eu-1"},
        TracingConfig("store-eu-1"),
        id="service-name-override",
    ),
    pytest.param(
        {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": COLLECTOR},
        TracingConfig("tessera-store", disabled=True),
        id="sdk-disabled",
    ),
]


@pytest.mark.parametrize(("environ", "expected"), CASES)
def test_tracing_config(environ: dict[str, str], expected: TracingConfig) -> None:
    assert tracing_config("tessera-store", environ) == expected


def test_log_records_carry_the_trace_id() -> None:
    tracer = TracerProvider().get_tracer("test")
    filter_ = TraceContextFilter()
    outside = logging.LogRecord("t", logging.INFO, __file__, 1, "message", None, None)
    assert filter_.filter(outside)
    assert (outside.trace_id, outside.span_id) == ("-", "-")
    with tracer.start_as_current_span("work") as span:
        inside = logging.LogRecord("t", logging.INFO, __file__, 1, "message", None, None)
        filter_.filter(inside)
        context = span.get_span_context()
    assert inside.trace_id == format(context.trace_id, "032x")
    assert inside.span_id == format(context.span_id, "016x")


@pytest.mark.parametrize(
    ("environ", "records"),
    [
        ({}, False),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_SAMPLER": "always_on"}, True),
    ],
    ids=["no-exporter-no-recording", "exporter-records", "sampler-asked-for"],
)
def test_spans_are_recorded_only_when_somebody_can_see_them(
    environ: dict[str, str], records: bool
) -> None:
    """Without an exporter nothing records spans, yet they keep ids for the logs and for
    propagation to the next service."""
    chosen = sampler(tracing_config("tessera-store", environ), environ)
    with TracerProvider(sampler=chosen).get_tracer("t").start_as_current_span("work") as span:
        assert span.is_recording() is records
        assert span.get_span_context().is_valid
        record = logging.LogRecord("t", logging.INFO, __file__, 1, "message", None, None)
        TraceContextFilter().filter(record)
    assert record.trace_id == format(span.get_span_context().trace_id, "032x")
