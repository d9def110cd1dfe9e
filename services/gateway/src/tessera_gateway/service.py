"""The gateway service: HTTP in front of the bus."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from tessera_common.settings import Settings
from tessera_common.telemetry import setup_tracing

from .app import build_app
from .auth import check_security_settings
from .limits import runner_limits
from .shutdown import DRAIN

log = logging.getLogger(__name__)


async def run(settings: Settings) -> None:
    """Serve HTTP on ``settings.host:settings.port`` until cancelled."""
    setup_tracing("tessera-gateway")
    problem = check_security_settings(settings)
    if problem is not None:
        log.error("%s", problem)
        raise SystemExit(2)
    app = build_app(settings)
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=1.0,
        **runner_limits(settings),
    )
    await runner.setup()
    try:
        site = web.TCPSite(
            runner, settings.host, settings.port, backlog=1024, reuse_port=settings.reuse_port
        )
        await site.start()
        log.info(
            "gateway listening on http://%s:%d%s", settings.host, settings.port, settings.base_path
        )
        await asyncio.Event().wait()
    finally:
        # Cancelled (SIGTERM): refuse new requests with 503 while in-flight ones finish.
        await app[DRAIN].close(settings.shutdown_grace_seconds)
        await runner.cleanup()
