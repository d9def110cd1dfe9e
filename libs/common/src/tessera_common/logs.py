"""Logging setup: one line per event on stderr, tagged with the service name.

Two formats, chosen by ``TESSERA_LOG_FORMAT``:

``text`` (default)  for people: ``<time> <service> <level> <logger>: <message> trace=<id>``
``json``            for log collectors: one JSON object per line with ``time`` (RFC 3339, UTC),
                    ``service``, ``level``, ``logger``, ``message``, ``trace_id``, ``span_id``
                    (W3C hex, ``null`` outside a span) and ``pid``; with ``error`` (type and
                    stack frames) when an exception is logged

so a log line can be found from its trace in a trace UI, and the other way round
(``telemetry.TraceContextFilter`` supplies the ids).

Only UIDs, keys, sizes and error codes are ever logged, never patient attributes
(ARCHITECTURE invariant 10). The JSON format also leaves out the *message* of a logged
exception: libraries quote the data they failed on (pydicom quotes element values), so only the
exception's type and where it was raised go out.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Mapping
from datetime import UTC, datetime

import orjson

from .telemetry import TraceContextFilter

LOG_FORMATS = ("text", "json")


def log_format(environ: Mapping[str, str]) -> str:
    """The format ``TESSERA_LOG_FORMAT`` asks for; ``text`` when unset or unknown."""
    requested = environ.get("TESSERA_LOG_FORMAT", "").strip().lower()
    return requested if requested in LOG_FORMATS else "text"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (see the module docstring for the fields)."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        trace_id = getattr(record, "trace_id", "-")
        span_id = getattr(record, "span_id", "-")
        document: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "service": self._service,
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "trace_id": None if trace_id == "-" else trace_id,
            "span_id": None if span_id == "-" else span_id,
            "pid": record.process,
        }
        if record.exc_info and record.exc_info[0] is not None:
            kind, _, tb = record.exc_info
            document["error"] = {
                "type": kind.__name__,
                "stack": "".join(traceback.format_tb(tb)),
            }
        return orjson.dumps(document, default=str).decode()


class MalformedRequestFilter(logging.Filter):
    """aiohttp logs a request it cannot parse at ERROR with the parser's exception, whose
    message quotes the raw request line: in the text format a malformed QIDO query would put a
    patient's name in the log (invariant 10). Such a request is the client's error (it gets a
    400), so the record becomes one INFO line naming the kind of error, without the quote."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and type(error).__module__ == "aiohttp.http_exceptions":
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "-"
            record.msg = "refused a malformed HTTP request from %s: %s (%s)"
            record.args = (remote, type(error).__name__, getattr(error, "code", "-"))
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def configure_logging(service: str, *, environ: Mapping[str, str] | None = None) -> None:
    """Send every log record to stderr, in the format and at the level the environment asks
    for (``TESSERA_LOG_FORMAT``, ``TESSERA_LOG_LEVEL``)."""
    env = os.environ if environ is None else environ
    level = env.get("TESSERA_LOG_LEVEL", "INFO").upper()
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(TraceContextFilter())
    if log_format(env) == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(
            logging.Formatter(
                f"%(asctime)s {service:<8} %(levelname)-5s %(name)s: %(message)s trace=%(trace_id)s"
            )
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, MalformedRequestFilter) for f in server.filters):
        server.addFilter(MalformedRequestFilter())
    unknown = env.get("TESSERA_LOG_FORMAT", "").strip()
    if unknown and unknown.lower() not in LOG_FORMATS:
        logging.getLogger(__name__).warning(
            "TESSERA_LOG_FORMAT=%r is not one of %s; using text", unknown, ", ".join(LOG_FORMATS)
        )
