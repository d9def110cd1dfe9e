"""Bearer JWTs end to end: a local identity provider on 127.0.0.1 (discovery document + JWK Set
with real RSA and EC keys), minted tokens, and a small aiohttp app behind the security
middleware. Also API keys over HTTP and the scope table as the middleware applies it."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tessera.apikeys import create_key, revoke_key
from tessera_common.errors import ErrorCode, TesseraError
from tessera_common.settings import Settings
from tessera_gateway.auth import PRINCIPAL, setup_security
from tessera_gateway.errors import error_middleware

Client = TestClient[web.Request, web.Application]
B = "/dicom-web"
AUDIENCE = "tessera-test"
ALL_SCOPES = "read write delete admin"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class IdentityProvider:
    """An OIDC provider's public face: discovery and JWK Set, served on loopback."""

    keys: dict[str, Any] = field(default_factory=dict)  # kid -> private key
    published: set[str] = field(default_factory=set)
    fetches: int = 0
    broken: bool = False
    issuer: str = ""

    def add_key(self, kid: str, private_key: Any, *, publish: bool = True) -> None:
        self.keys[kid] = private_key
        if publish:
            self.published.add(kid)

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid in sorted(self.published):
            public = self.keys[kid].public_key()
            algorithm = RSAAlgorithm if isinstance(public, rsa.RSAPublicKey) else ECAlgorithm
            keys.append({**algorithm.to_jwk(public, as_dict=True), "kid": kid, "use": "sig"})
        return {"keys": keys}

    def app(self) -> web.Application:
        async def discovery(_: web.Request) -> web.Response:
            return web.json_response({"issuer": self.issuer, "jwks_uri": self.issuer + "/jwks"})

        async def jwks(_: web.Request) -> web.Response:
            self.fetches += 1
            if self.broken:
                return web.Response(status=500)
            return web.json_response(self.jwks())

        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", discovery)
        app.router.add_get("/jwks", jwks)
        return app

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": "user-42",
            "azp": "ohif-viewer",
            "iat": now,
            "exp": now + 300,
            "scope": ALL_SCOPES,
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def mint(self, kid: str = "rsa-1", alg: str = "RS256", **overrides: Any) -> str:
        headers = {"kid": kid} if kid else {}
        key = self.keys[kid] if kid else self.keys["rsa-1"]
        return jwt.encode(self.claims(**overrides), key, algorithm=alg, headers=headers)


def unsigned_token(idp: IdentityProvider) -> str:
    """``alg: none`` (RFC 7519 §6): a token anyone can write."""
    header = _b64(orjson.dumps({"alg": "none", "typ": "JWT", "kid": "rsa-1"}))
    return f"{header}.{_b64(orjson.dumps(idp.claims()))}."


def hs256_with_public_key(idp: IdentityProvider) -> str:
    """The key-confusion attack: HMAC "signed" with the IdP's public key as the secret."""
    public_pem = (
        idp.keys["rsa-1"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    header = _b64(orjson.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}))
    payload = _b64(orjson.dumps(idp.claims()))
    signature = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


def foreign_signature(idp: IdentityProvider) -> str:
    """Signed by a key the IdP never published, but claiming the IdP's kid."""
    return jwt.encode(
        idp.claims(), idp.keys["attacker"], algorithm="RS256", headers={"kid": "rsa-1"}
    )


def es256_naming_an_rsa_kid(idp: IdentityProvider) -> str:
    return jwt.encode(idp.claims(), idp.keys["ec-1"], algorithm="ES256", headers={"kid": "rsa-1"})


def tampered_payload(idp: IdentityProvider) -> str:
    header, _, signature = idp.mint(scope="read").split(".")
    return f"{header}.{_b64(orjson.dumps(idp.claims(scope=ALL_SCOPES)))}.{signature}"


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def idp() -> AsyncIterator[IdentityProvider]:
    provider = IdentityProvider()
    provider.add_key("rsa-1", rsa.generate_private_key(public_exponent=65537, key_size=2048))
    provider.add_key("ec-1", ec.generate_private_key(ec.SECP256R1()))
    provider.add_key(
        "rsa-2", rsa.generate_private_key(public_exponent=65537, key_size=2048), publish=False
    )
    provider.add_key(
        "attacker", rsa.generate_private_key(public_exponent=65537, key_size=2048), publish=False
    )
    server = TestServer(provider.app(), host="127.0.0.1")
    await server.start_server()
    provider.issuer = str(server.make_url("")).rstrip("/")
    try:
        yield provider
    finally:
        await server.close()


def protected_app(settings: Settings) -> web.Application:
    """DICOMweb-shaped routes whose handlers echo who called them."""

    async def echo(request: web.Request) -> web.Response:
        principal = request.get(PRINCIPAL)
        return web.json_response({"subject": principal.subject if principal else None})

    async def fail(_: web.Request) -> web.Response:
        raise TesseraError(ErrorCode.NOT_FOUND, "no such study")

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/healthz", echo)
    app.router.add_get("/metrics", echo)
    app.router.add_get(B + "/studies", echo)
    app.router.add_post(B + "/studies", echo)
    app.router.add_get(B + "/studies/{study}", fail)
    app.router.add_delete(B + "/studies/{study}", echo)
    app.router.add_get(B + "/admin/ping", echo)
    setup_security(app, settings)
    return app


ClientFactory = Callable[..., Awaitable[Client]]


@pytest_asyncio.fixture(loop_scope="session")
async def make_client(idp: IdentityProvider, tmp_path: Path) -> AsyncIterator[ClientFactory]:
    clients: list[Client] = []

    async def make(**overrides: Any) -> Client:
        values: dict[str, Any] = {
            "data_dir": tmp_path,
            "auth_enabled": True,
            "oidc_issuer": idp.issuer,
            "oidc_audience": AUDIENCE,
            "oidc_jwks_url": idp.issuer + "/jwks",
            "oidc_jwks_refresh_interval": 0.0,
            "audit_enabled": False,
        }
        values.update(overrides)
        client = TestClient(TestServer(protected_app(Settings(**values)), host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


TOKENS: list[tuple[str, Callable[[IdentityProvider], str], int, str | None]] = [
    ("valid-rs256", lambda idp: idp.mint(), 200, None),
    ("valid-ps256", lambda idp: idp.mint(alg="PS256"), 200, None),
    ("valid-es256", lambda idp: idp.mint(kid="ec-1", alg="ES256"), 200, None),
    ("expired-within-leeway", lambda idp: idp.mint(exp=int(time.time()) - 5), 200, None),
    ("audience-in-list", lambda idp: idp.mint(aud=["other", AUDIENCE]), 200, None),
    ("expired", lambda idp: idp.mint(exp=int(time.time()) - 120), 401, "expired"),
    ("not-yet-valid", lambda idp: idp.mint(nbf=int(time.time()) + 120), 401, "not valid yet"),
    ("issued-in-future", lambda idp: idp.mint(iat=int(time.time()) + 120), 401, "not valid yet"),
    ("wrong-audience", lambda idp: idp.mint(aud="another-service"), 401, "aud"),
    ("wrong-issuer", lambda idp: idp.mint(iss="https://evil.example"), 401, "iss"),
    ("no-expiry", lambda idp: idp.mint(exp=None), 401, "exp"),
    ("no-audience", lambda idp: idp.mint(aud=None), 401, "aud"),
    ("wrong-signature", foreign_signature, 401, "signature"),
    ("tampered-payload", tampered_payload, 401, "signature"),
    ("alg-none", unsigned_token, 401, "algorithm"),
    ("hs256-with-public-key", hs256_with_public_key, 401, "algorithm"),
    ("key-of-another-type", es256_naming_an_rsa_kid, 401, "does not fit"),
    ("not-a-jwt", lambda idp: "abc.def", 401, "well-formed"),
    ("missing-scope", lambda idp: idp.mint(scope="write"), 403, "read"),
    ("no-scope-claim", lambda idp: idp.mint(scope=None), 403, "read"),
]


@pytest.mark.parametrize(
    ("mint", "status", "reason"), [t[1:] for t in TOKENS], ids=[t[0] for t in TOKENS]
)
async def test_bearer_tokens(
    make_client: ClientFactory,
    idp: IdentityProvider,
    mint: Callable[[IdentityProvider], str],
    status: int,
    reason: str | None,
) -> None:
    client = await make_client()
    response = await client.get(B + "/studies", headers=bearer(mint(idp)))
    body = await response.json()
    assert response.status == status, body
    if status == 200:
        assert body == {"subject": "user-42"}
        return
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="tessera", error=')
    expected_error = "insufficient_scope" if status == 403 else "invalid_token"
    assert f'error="{expected_error}"' in challenge
    assert reason is not None and reason in body["reason"]
    assert reason in challenge, "error_description repeats the reason"
    if status == 403:
        assert 'scope="read"' in challenge


CREDENTIALS = [
    ("none", {}, 401, 'Bearer realm="tessera"'),
    ("basic", {"Authorization": "Basic dXNlcjpwYXNz"}, 401, 'Bearer realm="tessera"'),
    ("empty-bearer", {"Authorization": "Bearer "}, 400, "invalid_request"),
    ("garbage-bearer", {"Authorization": "Bearer garbage"}, 401, "invalid_token"),
]


@pytest.mark.parametrize(
    ("headers", "status", "challenge"),
    [c[1:] for c in CREDENTIALS],
    ids=[c[0] for c in CREDENTIALS],
)
async def test_missing_or_malformed_credentials(
    make_client: ClientFactory, headers: dict[str, str], status: int, challenge: str
) -> None:
    client = await make_client()
    response = await client.get(B + "/studies", headers=headers)
    assert response.status == status
    assert challenge in response.headers["WWW-Authenticate"]
    if not headers:
        assert "error=" not in response.headers["WWW-Authenticate"], "RFC 6750 §3.1"


SCOPE_ROUTES = [
    ("qido-read", "GET", B + "/studies", "read", 200),
    ("qido-write-only", "GET", B + "/studies", "write", 403),
    ("stow-write", "POST", B + "/studies", "write", 200),
    ("stow-read-only", "POST", B + "/studies", "read", 403),
    ("delete-delete", "DELETE", B + "/studies/1.2.3", "delete", 200),
    ("delete-admin-is-not-delete", "DELETE", B + "/studies/1.2.3", "admin read write", 403),
    ("admin-admin", "GET", B + "/admin/ping", "admin", 200),
    ("admin-read-only", "GET", B + "/admin/ping", "read", 403),
    ("handler-error-passes-through", "GET", B + "/studies/1.2.3", "read", 404),
    ("unmatched-route", "GET", "/nowhere", "read", 404),
    ("wrong-method", "PUT", B + "/studies", "admin", 405),
]


@pytest.mark.parametrize(
    ("method", "path", "scope", "status"),
    [r[1:] for r in SCOPE_ROUTES],
    ids=[r[0] for r in SCOPE_ROUTES],
)
async def test_scopes_by_route(
    make_client: ClientFactory,
    idp: IdentityProvider,
    method: str,
    path: str,
    scope: str,
    status: int,
) -> None:
    client = await make_client()
    response = await client.request(method, path, headers=bearer(idp.mint(scope=scope)))
    assert response.status == status


async def test_unauthenticated_unmatched_route_is_401(make_client: ClientFactory) -> None:
    client = await make_client()
    assert (await client.get("/nowhere")).status == 401, "a 404 must not tell who is outside"


async def test_probes_and_metrics_are_public(make_client: ClientFactory) -> None:
    client = await make_client()
    for path in ("/healthz", "/metrics"):
        assert (await client.get(path)).status == 200
    protected = await make_client(auth_protect_metrics=True)
    assert (await protected.get("/metrics")).status == 401
    assert (await protected.get("/healthz")).status == 200


async def test_scope_claim_and_prefix_are_configurable(
    make_client: ClientFactory, idp: IdentityProvider
) -> None:
    client = await make_client(auth_scope_claim="roles", auth_scope_prefix="tessera:")
    token = idp.mint(scope="read", roles=["tessera:read"])
    assert (await client.get(B + "/studies", headers=bearer(token))).status == 200
    response = await client.post(B + "/studies", headers=bearer(token))
    assert response.status == 403
    assert 'scope="tessera:write"' in response.headers["WWW-Authenticate"]


async def test_key_rotation_refreshes_on_unknown_kid(
    make_client: ClientFactory, idp: IdentityProvider
) -> None:
    client = await make_client()
    assert (await client.get(B + "/studies", headers=bearer(idp.mint()))).status == 200
    rotated = idp.mint(kid="rsa-2")
    before = idp.fetches
    response = await client.get(B + "/studies", headers=bearer(rotated))
    assert response.status == 401 and "kid" in (await response.json())["reason"]
    assert idp.fetches == before + 1, "an unknown kid asks the IdP once"

    idp.published.add("rsa-2")
    try:
        assert (await client.get(B + "/studies", headers=bearer(rotated))).status == 200
        assert idp.fetches == before + 2
        assert (await client.get(B + "/studies", headers=bearer(rotated))).status == 200
        assert idp.fetches == before + 2, "a known kid is served from the cache"
    finally:
        idp.published.discard("rsa-2")


async def test_unknown_kid_flood_is_rate_limited(
    make_client: ClientFactory, idp: IdentityProvider
) -> None:
    client = await make_client(oidc_jwks_refresh_interval=60.0)
    assert (await client.get(B + "/studies", headers=bearer(idp.mint()))).status == 200
    before = idp.fetches
    idp.keys.update({f"bogus-{i}": idp.keys["attacker"] for i in range(40)})
    try:
        responses = await asyncio.gather(
            *(
                client.get(B + "/studies", headers=bearer(idp.mint(kid=f"bogus-{i}")))
                for i in range(40)
            )
        )
    finally:
        for i in range(40):
            idp.keys.pop(f"bogus-{i}")
    assert [r.status for r in responses] == [401] * 40
    assert idp.fetches - before == 0, "the first fetch was < 60 s ago: no refetch at all"
    assert (await client.get(B + "/studies", headers=bearer(idp.mint()))).status == 200


async def test_jwks_found_by_discovery(make_client: ClientFactory, idp: IdentityProvider) -> None:
    client = await make_client(oidc_jwks_url=None)
    response = await client.get(B + "/studies", headers=bearer(idp.mint(kid="ec-1", alg="ES256")))
    assert response.status == 200


async def test_unreachable_idp_is_503_then_recovers(
    make_client: ClientFactory, idp: IdentityProvider
) -> None:
    client = await make_client(oidc_jwks_refresh_interval=0.2)
    idp.broken = True
    try:
        response = await client.get(B + "/studies", headers=bearer(idp.mint()))
        assert response.status == 503
        assert response.headers["Retry-After"] == "30"
        fetches = idp.fetches
        for _ in range(5):
            assert (await client.get(B + "/studies", headers=bearer(idp.mint()))).status == 503
        assert idp.fetches == fetches, "retries wait for the refresh interval"
    finally:
        idp.broken = False
    await asyncio.sleep(0.25)
    assert (await client.get(B + "/studies", headers=bearer(idp.mint()))).status == 200


async def test_keys_held_survive_an_idp_outage(
    make_client: ClientFactory, idp: IdentityProvider
) -> None:
    client = await make_client(oidc_jwks_cache_seconds=0.01)
    assert (await client.get(B + "/studies", headers=bearer(idp.mint()))).status == 200
    idp.broken = True
    try:
        await asyncio.sleep(0.02)
        assert (await client.get(B + "/studies", headers=bearer(idp.mint()))).status == 200
    finally:
        idp.broken = False


async def test_jwts_refused_without_an_issuer(
    make_client: ClientFactory, idp: IdentityProvider
) -> None:
    client = await make_client(oidc_issuer=None, oidc_audience=None, oidc_jwks_url=None)
    response = await client.get(B + "/studies", headers=bearer(idp.mint()))
    assert response.status == 401
    assert "no OIDC issuer" in (await response.json())["reason"]


async def test_api_keys_over_http(make_client: ClientFactory, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    reader = create_key(settings, "viewer", ["read"]).key
    writer = create_key(settings, "modality", ["write"])
    client = await make_client()
    response = await client.get(B + "/studies", headers=bearer(reader))
    assert response.status == 200
    assert (await response.json())["subject"].startswith("apikey:")
    assert (await client.post(B + "/studies", headers=bearer(reader))).status == 403
    assert (await client.post(B + "/studies", headers=bearer(writer.key))).status == 200

    revoke_key(settings, writer.record.key_id)
    await asyncio.sleep(1.1)  # the key file is re-read at most once a second
    response = await client.post(B + "/studies", headers=bearer(writer.key))
    assert response.status == 401
    assert "revoked" in response.headers["WWW-Authenticate"]
    garbage = f"tsk_{uuid.uuid4().hex[:12]}_{'A' * 43}"
    assert (await client.get(B + "/studies", headers=bearer(garbage))).status == 401


async def test_auth_off_lets_everyone_in(make_client: ClientFactory) -> None:
    client = await make_client(
        auth_enabled=False, oidc_issuer=None, oidc_audience=None, oidc_jwks_url=None
    )
    response = await client.delete(B + "/studies/1.2.3")
    assert response.status == 200
    assert (await response.json())["subject"] == "anonymous"
