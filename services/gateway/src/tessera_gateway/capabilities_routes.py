"""Retrieve Capabilities (PS3.18 §8.9) and ``/openapi.json``: the aiohttp edge of
``capabilities``, ``wadl`` and ``openapi``.

- ``OPTIONS {base}/`` (the transaction as PS3.18 §8.9.1 defines it), ``OPTIONS`` on every
  routed DICOMweb resource (earlier editions' form, §6.8.1.1: the description of that resource
  and its children), and ``GET {base}`` / ``GET {base}/`` for clients that cannot send OPTIONS.
  ``Accept``: ``application/vnd.sun.wadl+xml`` (the default), ``application/json`` or
  ``application/dicom+json`` (the same tree as JSON); 406 otherwise. A CORS preflight (an
  ``OPTIONS`` with ``Access-Control-Request-Method``) is still answered by ``cors.preflight``.
- ``GET /openapi.json``: the OpenAPI 3.1 document, limited to the operations this gateway
  routes.

Both are public (``access.required_access``): they describe the API and hold no data.
"""

from __future__ import annotations

from aiohttp import hdrs, web

from tessera_common.errors import ErrorCode, TesseraError

from . import cors, wadl
from .capabilities import RESOURCES, WADL
from .context import SETTINGS, service_root
from .negotiation import choose, parse_accept
from .observability import route_template
from .openapi import build_openapi

CAPABILITY_TYPES = (WADL, "application/json", "application/dicom+json")
"""Offered in this order: WADL wins ties (and ``*/*``), as PS3.18 Annex H makes it the form."""
_ROUTE_PATTERNS = {"{path}": "{path:.+}"}
"""Path variables whose router pattern is not the default one segment."""


def add_capability_routes(router: web.UrlDispatcher, base: str) -> None:
    """Register the service root, ``OPTIONS`` on every DICOMweb resource already routed, and
    ``/openapi.json``. Call it after the DICOMweb routes are added."""
    base = base.rstrip("/")
    routed = {resource.canonical for resource in router.resources()}
    for resource in RESOURCES:
        if not resource.in_base or resource.path == "/":
            continue
        path = resource.full_path(base)
        if path in routed:
            for template, pattern in _ROUTE_PATTERNS.items():
                path = path.replace(template, pattern)
            router.add_route(hdrs.METH_OPTIONS, path, retrieve_capabilities)
    for root in (base, base + "/") if base else ("/",):
        router.add_get(root, retrieve_capabilities)
        router.add_route(hdrs.METH_OPTIONS, root, retrieve_capabilities)
    router.add_get("/openapi.json", openapi_document)


async def retrieve_capabilities(request: web.Request) -> web.StreamResponse:
    if (
        request.method == hdrs.METH_OPTIONS
        and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers
        and cors.CORS_POLICY in request.app
    ):
        return await cors.preflight(request)
    media_type = choose(parse_accept(request.headers.get(hdrs.ACCEPT)), CAPABILITY_TYPES)
    if media_type is None:
        raise TesseraError(
            ErrorCode.NOT_ACCEPTABLE,
            "the Capabilities Description is available as " + ", ".join(CAPABILITY_TYPES),
        )
    base = request.app[SETTINGS].base_path.rstrip("/")
    template = (route_template(request) or base)[len(base) :] or "/"
    try:
        tree = wadl.description(service_root(request), template)
    except wadl.UnknownResourceError:  # a routed resource missing from the table
        tree = wadl.description(service_root(request))
    body = wadl.to_wadl(tree) if media_type == WADL else wadl.to_json(tree)
    headers = {hdrs.ALLOW: _allowed(request), hdrs.VARY: "Accept"}
    return web.Response(body=body, content_type=media_type, charset="utf-8", headers=headers)


def _allowed(request: web.Request) -> str:
    """The methods the router takes at this request's path (``Allow``, RFC 9110 §10.2.1)."""
    template = route_template(request)
    methods = {
        route.method
        for route in request.app.router.routes()
        if route.resource is not None and route.resource.canonical == template
    }
    return ", ".join(sorted(methods))


async def openapi_document(request: web.Request) -> web.Response:
    routes = {
        (route.method, route.resource.canonical)
        for route in request.app.router.routes()
        if route.resource is not None
    }
    document = build_openapi(
        request.app[SETTINGS].base_path,
        routed=lambda method, path: (method, path) in routes,
    )
    return web.json_response(document)
