"""CORS for browser viewers (OHIF, Slim, …) on another origin: the Fetch standard's rules.

``CorsPolicy`` is pure: it decides the headers of a preflight (Fetch §3.2.2, "CORS protocol")
and of an actual response. ``setup_cors`` is the aiohttp glue: an ``OPTIONS`` route that answers
preflights for every path, and an ``on_response_prepare`` hook that adds the response headers
to *every* response — errors included, so a viewer can read a 401's ``WWW-Authenticate``.

Rules applied (Fetch §3.2.3 and §3.2.5):

- origins are compared exactly as browsers serialize them (``scheme://host[:port]``, lower
  case, no default port); the ``null`` origin is never allowed;
- ``*`` is accepted only while authentication is off: with it, any web page a user visits could
  script requests to the archive;
- with ``Access-Control-Allow-Credentials: true`` (cookies, TLS client certificates; a bearer
  token in ``Authorization`` does not need it) the origin is echoed, never ``*``;
- ``Authorization`` is never covered by a wildcard, so methods and headers are always listed;
- ``Vary: Origin`` whenever the answer depends on the origin, so shared caches keep them apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import hdrs, web

from tessera_common.settings import Settings

_DEFAULT_PORTS = {"http": 80, "https": 443}
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class CorsConfigError(ValueError):
    """CORS settings that would be unsafe or malformed."""


class CorsRejectedError(Exception):
    """A preflight this policy does not allow; the reason is for the operator, not the page."""


def normalize_origin(origin: str) -> str:
    """An origin as browsers send it: ``HTTPS://Viewer.example:443/`` -> ``https://viewer.example``."""
    parts = urlsplit(origin.strip())
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise CorsConfigError(f"{origin!r} is not an origin (scheme://host[:port])")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise CorsConfigError(f"{origin!r} is not an origin: no path, query or user allowed")
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    suffix = f":{port}" if port is not None and port != _DEFAULT_PORTS[parts.scheme] else ""
    return f"{parts.scheme}://{host}{suffix}"


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    origins: frozenset[str]
    any_origin: bool = False
    methods: tuple[str, ...] = ("GET", "HEAD", "POST", "DELETE")
    headers: tuple[str, ...] = ("Authorization", "Accept", "Content-Type", "If-None-Match", "Range")
    exposed: tuple[str, ...] = ()
    credentials: bool = False
    max_age: int = 600

    @classmethod
    def from_settings(cls, settings: Settings) -> CorsPolicy | None:
        """The policy, or None when no origin is configured (no CORS headers at all)."""
        configured = [origin.strip() for origin in settings.cors_allowed_origins if origin.strip()]
        if not configured:
            return None
        any_origin = "*" in configured
        if any_origin and len(configured) > 1:
            raise CorsConfigError("TESSERA_CORS_ALLOWED_ORIGINS is either '*' or a list of origins")
        if any_origin and settings.auth_enabled:
            raise CorsConfigError(
                "TESSERA_CORS_ALLOWED_ORIGINS='*' is refused with authentication on: list the "
                "viewers' origins"
            )
        if any_origin and settings.cors_allow_credentials:
            raise CorsConfigError("credentials cannot be allowed for any origin ('*')")
        if "null" in configured:
            raise CorsConfigError("the 'null' origin (sandboxed pages, files) is never allowed")
        for name in (*settings.cors_allowed_methods, *settings.cors_allowed_headers):
            if not _TOKEN.fullmatch(name):
                raise CorsConfigError(f"{name!r} is not an HTTP method or header name")
        return cls(
            origins=frozenset() if any_origin else frozenset(map(normalize_origin, configured)),
            any_origin=any_origin,
            methods=tuple(method.upper() for method in settings.cors_allowed_methods),
            headers=tuple(settings.cors_allowed_headers),
            exposed=tuple(settings.cors_exposed_headers),
            credentials=settings.cors_allow_credentials,
            max_age=settings.cors_max_age,
        )

    def allows(self, origin: str) -> bool:
        return origin != "null" and (self.any_origin or origin.lower() in self.origins)

    def _origin_headers(self, origin: str) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.any_origin and not self.credentials:
            headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = "*"
            return headers
        headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
        if self.credentials:
            headers[hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS] = "true"
        return headers

    def response_headers(self, origin: str | None) -> dict[str, str]:
        """Headers for an actual (non-preflight) response to a request from ``origin``."""
        if origin is None or not self.allows(origin):
            return {}
        headers = self._origin_headers(origin)
        if self.exposed:
            headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = ", ".join(self.exposed)
        return headers

    def preflight_headers(
        self, origin: str, method: str, request_headers: str | None
    ) -> dict[str, str]:
        """Headers of a successful preflight, or ``CorsRejectedError`` (Fetch §3.2.2)."""
        if not self.allows(origin):
            raise CorsRejectedError(f"origin {origin!r} is not allowed")
        if method not in self.methods:
            raise CorsRejectedError(f"method {method!r} is not allowed")
        allowed = {name.lower() for name in self.headers}
        asked = [name.strip().lower() for name in (request_headers or "").split(",")]
        refused = [name for name in asked if name and name not in allowed]
        if refused:
            raise CorsRejectedError(f"request headers {refused} are not allowed")
        headers = self._origin_headers(origin)
        headers[hdrs.ACCESS_CONTROL_ALLOW_METHODS] = ", ".join(self.methods)
        if self.headers:
            headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = ", ".join(self.headers)
        headers[hdrs.ACCESS_CONTROL_MAX_AGE] = str(self.max_age)
        return headers


CORS_POLICY = web.AppKey("cors_policy", CorsPolicy)
PREFLIGHT_VARY = ("Origin", "Access-Control-Request-Method", "Access-Control-Request-Headers")


# --- aiohttp glue ------------------------------------------------------------------------------


def setup_cors(app: web.Application, settings: Settings) -> None:
    """Answer preflights and add CORS headers to every response, as ``settings`` say.

    Raises ``CorsConfigError`` for unsafe settings. Does nothing when no origin is configured.
    """
    policy = CorsPolicy.from_settings(settings)
    if policy is None:
        return
    app[CORS_POLICY] = policy
    app.router.add_route(hdrs.METH_OPTIONS, "/{tail:.*}", preflight)
    app.on_response_prepare.append(_add_response_headers)


async def preflight(request: web.Request) -> web.Response:
    """``OPTIONS`` on any path. No other route takes ``OPTIONS``, so the router comes here."""
    policy = request.app[CORS_POLICY]
    origin = request.headers.get(hdrs.ORIGIN)
    method = request.headers.get(hdrs.ACCESS_CONTROL_REQUEST_METHOD)
    if origin is None or method is None:
        allow = ", ".join((*policy.methods, hdrs.METH_OPTIONS))
        return web.Response(status=204, headers={hdrs.ALLOW: allow})
    try:
        headers = policy.preflight_headers(
            origin, method, request.headers.get(hdrs.ACCESS_CONTROL_REQUEST_HEADERS)
        )
    except CorsRejectedError as exc:
        return web.Response(status=403, text=f"CORS preflight refused: {exc}\n")
    response = web.Response(status=204, headers=headers)
    _vary(response, PREFLIGHT_VARY)
    return response


async def _add_response_headers(request: web.Request, response: web.StreamResponse) -> None:
    if (
        request.method == hdrs.METH_OPTIONS
        and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers
    ):
        return  # a preflight: answered (or refused) by ``preflight`` alone
    policy = request.app[CORS_POLICY]
    if not policy.any_origin or policy.credentials:
        _vary(response, ("Origin",))
    response.headers.update(policy.response_headers(request.headers.get(hdrs.ORIGIN)))


def _vary(response: web.StreamResponse, names: tuple[str, ...]) -> None:
    present = [v.strip() for v in response.headers.get(hdrs.VARY, "").split(",") if v.strip()]
    lowered = {v.lower() for v in present}
    present += [name for name in names if name.lower() not in lowered]
    response.headers[hdrs.VARY] = ", ".join(present)
