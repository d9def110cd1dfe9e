"""The gateway's aiohttp application: routes, middleware and resources."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from tessera_common.blobstore import open_blob_store
from tessera_common.bus import Bus
from tessera_common.settings import Settings

from . import health, qido, stow, wado_rs
from .context import BLOBS, BUS, SETTINGS
from .errors import error_middleware

UID = r"{%s:[^/]+}"


def build_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=1024**2)
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_resources)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    add_dicomweb_routes(app.router, settings.base_path.rstrip("/"))
    return app


def add_dicomweb_routes(router: web.UrlDispatcher, base: str) -> None:
    study = base + "/studies/" + UID % "study"
    series = study + "/series/" + UID % "series"
    instance = series + "/instances/" + UID % "instance"
    router.add_post(base + "/studies", stow.store_instances)
    router.add_post(study, stow.store_instances)
    router.add_get(base + "/studies", qido.search_studies)
    router.add_get(base + "/series", qido.search_series)
    router.add_get(base + "/instances", qido.search_instances)
    router.add_get(study + "/series", qido.search_series)
    router.add_get(study + "/instances", qido.search_instances)
    router.add_get(series + "/instances", qido.search_instances)
    for resource in (study, series, instance):
        router.add_get(resource, wado_rs.retrieve)
        router.add_get(resource + "/metadata", wado_rs.metadata)


async def _resources(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    app[BLOBS] = open_blob_store(settings)
    bus = await Bus.connect(
        settings.nats_url, name="tessera-gateway", request_timeout=settings.request_timeout
    )
    app[BUS] = bus
    yield
    await bus.close()
