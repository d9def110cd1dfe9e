"""The IdP's signing keys: a JWK Set fetched with aiohttp, cached, refreshed on an unknown kid.

The set is fetched on first use (from ``TESSERA_OIDC_JWKS_URL``, or from the ``jwks_uri`` of
the issuer's OpenID Connect discovery document, OIDC Discovery §4), used for
``oidc_jwks_cache_seconds``, and fetched again early when a token names a ``kid`` it does not
hold (the IdP rotated its keys). Fetches are single-flight and at least
``oidc_jwks_refresh_interval`` apart, so a flood of tokens with made-up kids costs the IdP one
request per interval. When a refetch fails, the keys already held stay in use.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import aiohttp
import orjson

from tessera_common.settings import Settings

from .access import AuthError, UnavailableError, is_loopback
from .tokens import JwksError, SigningKey, TokenHeader, parse_jwks, pick_key

log = logging.getLogger(__name__)

FETCH_TIMEOUT = 5.0
MAX_DOCUMENT_BYTES = 1024 * 1024
DISCOVERY_PATH = "/.well-known/openid-configuration"


def check_fetch_url(url: str, *, allow_http: bool) -> str | None:
    """Why ``url`` must not be used to fetch keys, or None. Keys fetched over plain http could
    be swapped by anyone on the path, so http is only for loopback unless allowed."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return None
    if parts.scheme == "http" and parts.hostname and (allow_http or is_loopback(parts.hostname)):
        return None
    return (
        f"{url!r} is not an https URL (plain http only on loopback, or with "
        "TESSERA_OIDC_ALLOW_HTTP=true)"
    )


class JwksClient:
    """Signing keys of one issuer, fetched on demand."""

    def __init__(
        self,
        *,
        issuer: str,
        jwks_url: str | None,
        cache_seconds: float = 3600.0,
        refresh_interval: float = 30.0,
        allow_http: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._issuer = issuer
        self._jwks_url = jwks_url
        self._cache_seconds = cache_seconds
        self._refresh_interval = refresh_interval
        self._allow_http = allow_http
        self._clock = clock
        self._keys: dict[str | None, SigningKey] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        self.fetches = 0
        """JWK Set fetches attempted so far (for tests and logs)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> JwksClient | None:
        if not settings.oidc_issuer:
            return None
        return cls(
            issuer=settings.oidc_issuer,
            jwks_url=settings.oidc_jwks_url,
            cache_seconds=settings.oidc_jwks_cache_seconds,
            refresh_interval=settings.oidc_jwks_refresh_interval,
            allow_http=settings.oidc_allow_http,
        )

    async def key_for(self, header: TokenHeader) -> SigningKey:
        """The key that verifies a token with ``header``; raises ``AuthError`` when the IdP
        has none, ``UnavailableError`` when no keys could be fetched at all."""
        if self._fetched_at is None or self._clock() - self._fetched_at > self._cache_seconds:
            await self._refresh()
        key = pick_key(self._keys, header)
        if key is None and header.kid not in self._keys:
            await self._refresh()  # perhaps the IdP rotated its keys
            key = pick_key(self._keys, header)
        if key is None:
            if self._fetched_at is None:
                raise UnavailableError("the identity provider's signing keys cannot be fetched")
            if header.kid in self._keys:
                raise AuthError(
                    "invalid_token", f"the key named by kid does not fit algorithm {header.alg}"
                )
            raise AuthError("invalid_token", "the token's signing key (kid) is not known")
        return key

    async def _refresh(self) -> None:
        """Fetch the set unless another fetch happened within the refresh interval."""
        waited_since = self._attempted_at
        async with self._lock:
            if self._attempted_at != waited_since:
                return  # someone fetched while we waited: use their result
            now = self._clock()
            if self._attempted_at is not None and now - self._attempted_at < self._refresh_interval:
                return
            self._attempted_at = now
            self.fetches += 1
            try:
                keys = parse_jwks(await self._get(await self._jwks_location()))
            except (aiohttp.ClientError, TimeoutError, JwksError, ValueError) as exc:
                log.warning(
                    "cannot fetch the JWK Set of %s (%s); %s",
                    self._issuer,
                    exc,
                    "keeping the keys held" if self._keys else "no keys held",
                )
                return
            self._keys = keys
            self._fetched_at = self._clock()
            log.info("fetched %d signing keys of %s", len(keys), self._issuer)

    async def _jwks_location(self) -> str:
        if self._jwks_url is None:
            discovery = self._issuer.rstrip("/") + DISCOVERY_PATH
            document = orjson.loads(await self._get(discovery))
            if not isinstance(document, dict) or document.get("issuer") != self._issuer:
                raise JwksError("the discovery document names another issuer (OIDC Discovery §4.3)")
            jwks_uri = document.get("jwks_uri")
            if not isinstance(jwks_uri, str):
                raise JwksError("the discovery document has no jwks_uri")
            self._jwks_url = jwks_uri
        return self._jwks_url

    async def _get(self, url: str) -> bytes:
        problem = check_fetch_url(url, allow_http=self._allow_http)
        if problem is not None:
            raise JwksError(problem)
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT),
                headers={"Accept": "application/json"},
            )
        async with self._session.get(url, allow_redirects=False) as response:
            if response.status != 200:
                raise JwksError(f"{url} answered HTTP {response.status}")
            body = bytearray()
            async for chunk in response.content.iter_any():
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise JwksError(f"{url} sent more than {MAX_DOCUMENT_BYTES} bytes")
            return bytes(body)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
