"""Logging setup: one line per event on stderr, tagged with the service name.

Only UIDs, keys, sizes and error codes are ever logged, never patient attributes
(ARCHITECTURE invariant 10).
"""

from __future__ import annotations

import logging
import os
import sys

from .telemetry import TraceContextFilter


def configure_logging(service: str) -> None:
    level = os.environ.get("TESSERA_LOG_LEVEL", "INFO").upper()
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(TraceContextFilter())
    handler.setFormatter(
        logging.Formatter(
            f"%(asctime)s {service:<8} %(levelname)-5s %(name)s: %(message)s trace=%(trace_id)s"
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
