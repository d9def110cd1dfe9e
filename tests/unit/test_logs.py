"""The log formats: JSON lines carrying trace ids, text by default, never an exception's
message (ARCHITECTURE invariant 10)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider

from tessera_common.logs import JsonFormatter, configure_logging, log_format
from tessera_common.telemetry import TraceContextFilter

PATIENT = "DOE^JANE"
FIELDS = {"time", "service", "level", "logger", "message", "trace_id", "span_id", "pid"}


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        pytest.param({}, "text", id="unset-is-text"),
        pytest.param({"TESSERA_LOG_FORMAT": "json"}, "json", id="json"),
        pytest.param({"TESSERA_LOG_FORMAT": " JSON "}, "json", id="case-and-space"),
        pytest.param({"TESSERA_LOG_FORMAT": "text"}, "text", id="text"),
        pytest.param({"TESSERA_LOG_FORMAT": "logfmt"}, "text", id="unknown-is-text"),
    ],
)
def test_log_format(environ: dict[str, str], expected: str) -> None:
    assert log_format(environ) == expected


@pytest.fixture
def json_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(TraceContextFilter())
    handler.setFormatter(JsonFormatter("store"))
    logger = logging.getLogger("tests.json_log")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)


def records(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_one_json_object_per_line_outside_a_span(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = json_log
    logger.info("stored %s\nin %d ms", "1.2.3", 12)
    (record,) = records(stream)
    assert record.keys() == FIELDS
    assert record["message"] == "stored 1.2.3\nin 12 ms"
    assert (record["service"], record["level"], record["logger"]) == (
        "store",
        "INFO",
        "tests.json_log",
    )
    assert record["trace_id"] is None and record["span_id"] is None
    assert str(record["time"]).endswith("+00:00")


def test_json_lines_carry_the_current_trace_and_span(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = json_log
    tracer = TracerProvider().get_tracer("tests")
    with tracer.start_as_current_span("ingest") as span:
        logger.warning("inside")
    (record,) = records(stream)
    context = span.get_span_context()
    assert record["trace_id"] == format(context.trace_id, "032x")
    assert record["span_id"] == format(context.span_id, "016x")


def test_an_exception_is_logged_by_type_and_place_never_by_message(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = json_log
    try:
        raise ValueError(f"Invalid value for PatientName: {PATIENT!r}")
    except ValueError:
        logger.exception("ingest failed")
    (record,) = records(stream)
    error = record["error"]
    assert isinstance(error, dict)
    assert error["type"] == "ValueError"
    assert "test_an_exception_is_logged_by_type_and_place" in error["stack"]
    assert PATIENT not in stream.getvalue()


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield root
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.mark.parametrize("format_name", ["json", "text"])
def test_configure_logging_writes_the_chosen_format_to_stderr(
    root_logger: logging.Logger, capsys: pytest.CaptureFixture[str], format_name: str
) -> None:
    configure_logging(
        "query", environ={"TESSERA_LOG_FORMAT": format_name, "TESSERA_LOG_LEVEL": "DEBUG"}
    )
    assert root_logger.level == logging.DEBUG
    logging.getLogger("tessera_query.service").debug("query service ready")
    line = capsys.readouterr().err.strip()
    if format_name == "json":
        record = json.loads(line)
        assert (record["service"], record["message"]) == ("query", "query service ready")
    else:
        assert line.endswith("tessera_query.service: query service ready trace=-")
        assert " query " in line


def test_an_unknown_format_is_reported_and_text_is_used(
    root_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("gateway", environ={"TESSERA_LOG_FORMAT": "xml"})
    err = capsys.readouterr().err
    assert "TESSERA_LOG_FORMAT='xml' is not one of text, json; using text" in err
    assert not err.lstrip().startswith("{")
