"""Authentication, authorization and audit for the gateway: one aiohttp middleware.

For each request the middleware looks up what the route needs (``access.required_access``),
authenticates the bearer credential — an OIDC access token (JWT, ``tokens.py`` + ``jwks.py``)
or an API key (``api_keys.py``) — checks the scope, calls the handler and records one audit
event (``audit.py``) with the outcome. Probes (``/healthz``, ``/readyz``), ``/metrics`` (unless
``TESSERA_AUTH_PROTECT_METRICS``) and CORS preflights pass untouched and unaudited.

With ``TESSERA_AUTH_ENABLED=false`` (the embedded default, bound to loopback) every request is
let through as ``anonymous`` and still audited. See docs/SECURITY.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

import orjson
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from tessera_common.errors import TesseraError
from tessera_common.settings import Settings

from .access import (
    ANONYMOUS,
    AuthError,
    Principal,
    UnavailableError,
    bearer_token,
    challenge,
    check_bind_safety,
    required_access,
)
from .api_keys import ApiKeyStore, api_keys_path, looks_like_api_key
from .audit import CLIENT_CLOSED_REQUEST, AuditTrail, audit_event
from .context import BUS
from .cors import CorsConfigError, CorsPolicy
from .jwks import JwksClient, check_fetch_url
from .observability import route_template
from .tokens import TokenConfigError, TokenPolicy, read_header, verify_token

log = logging.getLogger(__name__)

UNAUTHENTICATED = Principal(subject="unauthenticated", method="none", scopes=frozenset())
RETRY_AFTER_SECONDS = 30
_TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden"}


class Authenticator:
    """Turns a request's ``Authorization`` header into a ``Principal``."""

    def __init__(
        self,
        *,
        policy: TokenPolicy | None,
        jwks: JwksClient | None,
        api_keys: ApiKeyStore | None,
    ) -> None:
        self._policy = policy
        self._jwks = jwks
        self._api_keys = api_keys

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        return cls(
            policy=TokenPolicy.from_settings(settings),
            jwks=JwksClient.from_settings(settings),
            api_keys=ApiKeyStore(api_keys_path(settings)),
        )

    async def authenticate(self, authorization: list[str]) -> Principal:
        """The caller, or ``AuthError`` / ``UnavailableError``."""
        token = bearer_token(authorization)
        if looks_like_api_key(token):
            record = self._api_keys.verify(token) if self._api_keys is not None else None
            if record is None:
                raise AuthError("invalid_token", "the API key is unknown or revoked")
            return record.principal()
        if self._policy is None or self._jwks is None:
            raise AuthError(
                "invalid_token", "bearer JWTs are not accepted: no OIDC issuer is configured"
            )
        header = read_header(token, self._policy)
        key = await self._jwks.key_for(header)
        return verify_token(token, header, key, self._policy)

    async def close(self) -> None:
        if self._jwks is not None:
            await self._jwks.close()


AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
AUDIT_TRAIL = web.AppKey("audit_trail", AuditTrail)
PRINCIPAL = web.RequestKey("principal", Principal)
"""The caller of a request, for handlers (absent on public routes)."""


def check_security_settings(settings: Settings) -> str | None:
    """Every reason the security settings are unusable, or None. Includes the bind check;
    call it before listening (the gateway's start and the supervisor)."""
    problems: list[str] = []
    bind = check_bind_safety(settings)
    if bind is not None:
        problems.append(bind)
    try:
        TokenPolicy.from_settings(settings)
    except TokenConfigError as exc:
        problems.append(str(exc))
    if settings.oidc_jwks_url is not None:
        problem = check_fetch_url(settings.oidc_jwks_url, allow_http=settings.oidc_allow_http)
        if problem is not None:
            problems.append(f"TESSERA_OIDC_JWKS_URL: {problem}")
    elif settings.oidc_issuer:
        problem = check_fetch_url(settings.oidc_issuer, allow_http=settings.oidc_allow_http)
        if problem is not None:
            problems.append(f"TESSERA_OIDC_ISSUER (for discovery): {problem}")
    try:
        CorsPolicy.from_settings(settings)
    except CorsConfigError as exc:
        problems.append(str(exc))
    return "; ".join(problems) or None


def security_middleware(settings: Settings) -> Middleware:
    """The middleware; needs ``app[AUTHENTICATOR]`` (and ``app[AUDIT_TRAIL]`` for audit), both
    put there by :func:`setup_security`."""
    realm = settings.auth_realm
    base_path = settings.base_path
    protect_metrics = settings.auth_protect_metrics
    enabled = settings.auth_enabled

    @web.middleware
    async def security(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = route_template(request)
        access = required_access(
            request.method, route, base_path=base_path, protect_metrics=protect_metrics
        )
        if access.public:
            return await handler(request)
        started = time.perf_counter()
        principal = ANONYMOUS
        status = 500
        try:
            if enabled:
                principal = UNAUTHENTICATED
                principal = await request.app[AUTHENTICATOR].authenticate(
                    request.headers.getall(hdrs.AUTHORIZATION, [])
                )
                if access.scope is not None and access.scope not in principal.scopes:
                    scope = settings.auth_scope_prefix + access.scope.value
                    raise AuthError(
                        "insufficient_scope", f"this request needs the {scope!r} scope", scope=scope
                    )
            request[PRINCIPAL] = principal
            response = await handler(request)
            status = response.status
            return response
        except AuthError as failure:
            status = failure.status
            return failure_response(failure, realm)
        except UnavailableError as exc:
            status = 503
            return unavailable_response(str(exc))
        except web.HTTPException as exc:
            status = exc.status
            raise
        except TesseraError as exc:
            status = exc.http_status
            raise
        except asyncio.CancelledError:
            status = CLIENT_CLOSED_REQUEST
            raise
        finally:
            trail = request.app.get(AUDIT_TRAIL)
            if trail is not None:
                trail.record(
                    audit_event(
                        principal=principal,
                        action=access.scope,
                        method=request.method,
                        route=route,
                        path_params=request.match_info,
                        status=status,
                        duration=time.perf_counter() - started,
                        source_address=request.remote,
                    )
                )

    return security


def failure_response(failure: AuthError, realm: str) -> web.Response:
    """401/403/400 with the RFC 6750 challenge and the house JSON error body."""
    body = {
        "error": failure.error or "unauthorized",
        "title": _TITLES.get(failure.status, "Unauthorized"),
        "reason": failure.description,
        "see": "RFC 6750 §3.1",
    }
    return web.Response(
        status=failure.status,
        body=orjson.dumps(body),
        content_type="application/json",
        headers={hdrs.WWW_AUTHENTICATE: challenge(failure, realm)},
    )


def unavailable_response(reason: str) -> web.Response:
    body = {"error": "service-unavailable", "title": "Service Unavailable", "reason": reason}
    return web.Response(
        status=503,
        body=orjson.dumps(body),
        content_type="application/json",
        headers={hdrs.RETRY_AFTER: str(RETRY_AFTER_SECONDS)},
    )


def security_context(
    settings: Settings,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` entry: starts the audit trail on ``app[BUS]`` (so it must come after
    the entry that connects the bus) and closes the JWKS client and the trail at shutdown."""

    async def resources(app: web.Application) -> AsyncIterator[None]:
        trail = None
        if settings.audit_enabled:
            trail = AuditTrail.from_settings(settings, app.get(BUS))
            await trail.start()
            app[AUDIT_TRAIL] = trail
        if settings.auth_enabled:
            log.info(
                "authentication on (OIDC issuer: %s; API keys: %s)",
                settings.oidc_issuer or "none",
                api_keys_path(settings),
            )
        try:
            yield
        finally:
            await app[AUTHENTICATOR].close()
            if trail is not None:
                await trail.close()

    return resources


def setup_security(app: web.Application, settings: Settings) -> None:
    """Add the security middleware (innermost so far) and its resources to ``app``.

    Raises ``TokenConfigError`` for unusable OIDC settings. Call it after the ``cleanup_ctx``
    entry that connects ``app[BUS]``.
    """
    app[AUTHENTICATOR] = Authenticator.from_settings(settings)
    app.middlewares.append(security_middleware(settings))
    app.cleanup_ctx.append(security_context(settings))
