"""The gateway's aiohttp application: routes, middleware and resources."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from tessera_common.blobstore import open_blob_store
from tessera_common.bus import Bus
from tessera_common.frame_indexes import FrameIndexes
from tessera_common.settings import Settings

from . import (
    auth,
    bulkdata,
    cors,
    frames,
    health,
    metadata,
    qido,
    rendered,
    stow,
    viewer,
    wado_rs,
    wado_uri,
)
from .capabilities_routes import add_capability_routes
from .changefeed import setup_changefeed
from .codec_client import BusCodec
from .context import BLOBS, BUS, SETTINGS
from .delete import delete_resource
from .errors import error_middleware
from .instances import CODEC, FRAME_INDEXES
from .locations import LOCATIONS, watch
from .observability import add_metrics_route, observability_middleware
from .shutdown import DRAIN, Drain, shutdown_middleware
from .transcoded import TRANSCODED, TranscodedFrames

UID = r"{%s:[^/]+}"


def build_app(settings: Settings) -> web.Application:
    # Observability first (outermost): it sees the status the client gets.
    app = web.Application(
        middlewares=[observability_middleware, shutdown_middleware, error_middleware],
        client_max_size=1024**2,
    )
    app[SETTINGS] = settings
    app[DRAIN] = Drain()
    app.cleanup_ctx.append(_resources)
    # Authentication + audit need app[BUS]: set up right after the resources.
    auth.setup_security(app, settings)
    app.cleanup_ctx.append(metadata.cancel_background)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    add_metrics_route(app.router)
    add_dicomweb_routes(app.router, settings.base_path.rstrip("/"))
    setup_changefeed(app, settings.base_path.rstrip("/"))
    viewer.setup_viewer(app, settings)  # /viewer: OHIF, when TESSERA_VIEWER_DIR is set
    add_capability_routes(app.router, settings.base_path)  # after every other route
    cors.setup_cors(app, settings)
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
        router.add_get(resource + "/metadata", metadata.metadata)
        router.add_get(resource + "/pixeldata", bulkdata.retrieve_pixeldata)
        router.add_delete(resource, delete_resource)
    router.add_get(instance + "/frames/{frames}", frames.retrieve_frames)
    rendered.add_rendered_routes(router, study, series, instance)
    router.add_get(instance + "/bulkdata/{path:.+}", bulkdata.retrieve_bulkdata)
    router.add_get(base + "/wado", wado_uri.retrieve)


async def _resources(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    app[BLOBS] = open_blob_store(settings)
    bus = await Bus.connect(
        settings.nats_url, name="tessera-gateway", request_timeout=settings.request_timeout
    )
    app[BUS] = bus
    codec = BusCodec(bus)
    await codec.start()
    app[CODEC] = codec
    app[FRAME_INDEXES] = FrameIndexes(app[BLOBS])
    app[LOCATIONS] = await watch(bus)
    app[TRANSCODED] = TranscodedFrames()
    app[bulkdata.ELEMENT_RANGES] = bulkdata.ElementRanges()
    yield
    await bus.close()
