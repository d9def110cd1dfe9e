"""Who may do what: scopes, the route-to-scope table, challenges and the bind-safety rule.

Pure: no aiohttp, no I/O. The middleware in ``auth.py`` asks :func:`required_access` what a
request needs, authenticates the caller into a :class:`Principal`, and answers a failure with
:func:`challenge` (RFC 6750 §3: 401 with ``WWW-Authenticate: Bearer …`` when the credential is
missing or invalid, 403 ``insufficient_scope`` when it is valid but not enough).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from tessera_common.settings import Settings


class Scope(StrEnum):
    """Tessera's four scopes. None implies another: a modality may store without reading."""

    READ = "read"
    WRITE = "write"
    DELETE = "delete"
    ADMIN = "admin"


AuthMethod = Literal["jwt", "api-key", "none"]


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. ``subject`` is what the audit trail records as *who*."""

    subject: str
    method: AuthMethod
    scopes: frozenset[Scope]
    client_id: str | None = None


ANONYMOUS = Principal(subject="anonymous", method="none", scopes=frozenset(Scope))
"""The caller when authentication is off: every scope (the server is bound to loopback)."""


@dataclass(frozen=True, slots=True)
class Access:
    """What a request needs: nothing (``public``), a valid credential, or also a scope."""

    public: bool = False
    scope: Scope | None = None


PUBLIC = Access(public=True)
AUTHENTICATED = Access()

PROBE_ROUTES = frozenset({"/healthz", "/readyz"})
"""Liveness and readiness probes: always unauthenticated (Kubernetes and the supervisor)."""
METRICS_ROUTE = "/metrics"
OPENAPI_ROUTE = "/openapi.json"
"""The OpenAPI document: public, like the Capabilities Description (it describes the API and
holds no data). So is ``GET``/``HEAD`` of the base path, the Retrieve Capabilities transaction
(PS3.18 §8.9), whose ``OPTIONS`` form is public anyway."""
READ_METHODS = frozenset({"GET", "HEAD"})
VIEWER_ROUTE = "/viewer"
"""The OHIF viewer's files (``viewer.py``): public to read — a static build and a config naming
the DICOMweb root, no data; the viewer's DICOMweb requests need their scopes as usual."""

DICOMWEB_SCOPES: tuple[tuple[frozenset[str], str | None, Scope], ...] = (
    # (methods, route template below the base path or None for any, scope); first match wins.
    (READ_METHODS, None, Scope.READ),  # QIDO-RS §10.6, WADO-RS §10.4, WADO-URI §9, rendered
    (frozenset({"POST"}), "/studies", Scope.WRITE),  # STOW-RS, PS3.18 §10.5
    (frozenset({"POST"}), "/studies/{study}", Scope.WRITE),
    (frozenset({"DELETE"}), None, Scope.DELETE),  # study / series / instance deletion
)
"""The DICOMweb resources' scopes. Anything else below the base path needs ``admin``: a new
route is closed until it is given its scope here."""


def required_access(
    method: str, route: str | None, *, base_path: str, protect_metrics: bool = False
) -> Access:
    """What ``method`` on the route *template* ``route`` (None: no route matched) needs.

    ``OPTIONS`` is public: a CORS preflight never carries credentials (Fetch §3.2.2) and is
    answered without touching data. An unmatched request still needs a valid credential, so
    that a 404 tells an anonymous caller nothing.
    """
    if method == "OPTIONS" or route in PROBE_ROUTES or route == OPENAPI_ROUTE:
        return PUBLIC
    if route == METRICS_ROUTE:
        return Access(scope=Scope.ADMIN) if protect_metrics else PUBLIC
    if route is None:
        return AUTHENTICATED
    base = base_path.rstrip("/")
    if method in READ_METHODS and route in (base, base + "/"):
        return PUBLIC
    inside_base = route.startswith(base + "/")
    viewer = route == VIEWER_ROUTE or route.startswith(VIEWER_ROUTE + "/")
    if method in READ_METHODS and viewer and not inside_base:
        return PUBLIC
    if not inside_base:
        return Access(scope=Scope.ADMIN)
    relative = route[len(base) :]
    if relative == "/admin" or relative.startswith("/admin/"):
        return Access(scope=Scope.ADMIN)
    for methods, template, scope in DICOMWEB_SCOPES:
        if method in methods and (template is None or template == relative):
            return Access(scope=scope)
    return Access(scope=Scope.ADMIN)


def granted_scopes(names: list[str], prefix: str = "") -> frozenset[Scope]:
    """Tessera scopes among the IdP's scope names (``prefix`` + scope, e.g. ``tessera:read``)."""
    granted: set[Scope] = set()
    for name in names:
        if not name.startswith(prefix):
            continue
        try:
            granted.add(Scope(name[len(prefix) :]))
        except ValueError:
            continue
    return frozenset(granted)


# --- failures and RFC 6750 challenges ----------------------------------------------------------


class AuthError(Exception):
    """An authentication or authorization failure, as RFC 6750 §3.1 names them.

    ``error`` None: the request carried no credential (401, challenge without an error code).
    """

    def __init__(
        self,
        error: Literal["invalid_request", "invalid_token", "insufficient_scope"] | None,
        description: str,
        *,
        scope: str | None = None,
    ) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.scope = scope

    @property
    def status(self) -> int:
        """RFC 6750 §3.1: invalid_request 400, invalid_token 401, insufficient_scope 403."""
        return {"invalid_request": 400, "insufficient_scope": 403}.get(self.error or "", 401)


class UnavailableError(Exception):
    """Credentials cannot be checked right now (the IdP's keys are unreachable): 503."""


_UNSAFE_IN_QUOTED = re.compile(r"[^\x20-\x21\x23-\x5b\x5d-\x7e]")


def _quoted(value: str) -> str:
    """RFC 6750 §3: error_description and scope are ``%x20-21 / %x23-5B / %x5D-7E``."""
    return '"' + _UNSAFE_IN_QUOTED.sub("?", value)[:200] + '"'


def challenge(failure: AuthError, realm: str) -> str:
    """The ``WWW-Authenticate`` value for ``failure`` (RFC 6750 §3)."""
    params = [f"realm={_quoted(realm)}"]
    if failure.error is not None:
        params.append(f"error={_quoted(failure.error)}")
        params.append(f"error_description={_quoted(failure.description)}")
    if failure.scope is not None:
        params.append(f"scope={_quoted(failure.scope)}")
    return "Bearer " + ", ".join(params)


_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def bearer_token(authorization: list[str]) -> str:
    """The token of the request's ``Authorization`` header values (RFC 6750 §2.1).

    Raises ``AuthError``: no error code when there is no bearer credential at all,
    ``invalid_request`` when it is malformed or repeated.
    """
    if not authorization:
        raise AuthError(None, "this resource needs a bearer token")
    if len(authorization) > 1:
        raise AuthError("invalid_request", "more than one Authorization header")
    scheme, _, token = authorization[0].strip().partition(" ")
    if scheme.lower() != "bearer":
        raise AuthError(None, "this resource needs a bearer token")
    token = token.strip()
    if not _TOKEN68.fullmatch(token):
        raise AuthError("invalid_request", "the bearer token is empty or malformed")
    return token


# --- bind safety ---------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses; a wildcard or any other name is not."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind_safety(settings: Settings) -> str | None:
    """Why the gateway must not listen as configured, or None when it may.

    With authentication off, anyone who reaches the port reads and writes every study: that is
    only acceptable on loopback, or when the operator says so explicitly
    (``TESSERA_ALLOW_INSECURE_BIND=true``, e.g. behind an authenticating proxy).
    """
    if settings.auth_enabled or settings.allow_insecure_bind or is_loopback(settings.host):
        return None
    return (
        f"refusing to listen on {settings.host!r} with authentication off: anyone who reaches "
        "it could read and change every study. Bind to 127.0.0.1, or turn authentication on "
        "(TESSERA_AUTH_ENABLED=true with TESSERA_OIDC_* or API keys), or set "
        "TESSERA_ALLOW_INSECURE_BIND=true if a proxy in front authenticates"
    )
