"""CORS for browser viewers: the policy's rules as a table, and preflight and actual requests
against a small app with CORS and authentication on (Fetch standard §3.2)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tessera.apikeys import create_key
from tessera_common.settings import Settings
from tessera_gateway.auth import setup_security
from tessera_gateway.cors import CorsConfigError, CorsPolicy, normalize_origin, setup_cors
from tessera_gateway.errors import error_middleware

Client = TestClient[web.Request, web.Application]
ClientFactory = Callable[..., Awaitable[Client]]
B = "/dicom-web"
VIEWER = "https://viewer.example"
OTHER = "https://evil.example"

ORIGINS = [
    ("lower-cased", "HTTPS://Viewer.Example", "https://viewer.example"),
    ("default-port-dropped", "https://viewer.example:443", "https://viewer.example"),
    ("other-port-kept", "http://localhost:3000", "http://localhost:3000"),
    ("trailing-slash", "https://viewer.example/", "https://viewer.example"),
    ("ipv6", "http://[::1]:8080", "http://[::1]:8080"),
]


@pytest.mark.parametrize(
    ("given", "expected"), [o[1:] for o in ORIGINS], ids=[o[0] for o in ORIGINS]
)
def test_normalize_origin(given: str, expected: str) -> None:
    assert normalize_origin(given) == expected


BAD_CONFIGS = [
    ("path", {"cors_allowed_origins": ["https://viewer.example/app"]}),
    ("no-scheme", {"cors_allowed_origins": ["viewer.example"]}),
    ("ftp", {"cors_allowed_origins": ["ftp://viewer.example"]}),
    ("null-origin", {"cors_allowed_origins": ["null"]}),
    ("star-with-auth", {"cors_allowed_origins": ["*"], "auth_enabled": True}),
    ("star-with-credentials", {"cors_allowed_origins": ["*"], "cors_allow_credentials": True}),
    ("star-and-list", {"cors_allowed_origins": ["*", VIEWER]}),
    ("bad-header-name", {"cors_allowed_origins": [VIEWER], "cors_allowed_headers": ["X Bad"]}),
]


@pytest.mark.parametrize("overrides", [c[1] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS])
def test_unsafe_configurations_are_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(CorsConfigError):
        CorsPolicy.from_settings(Settings(**overrides))


def test_no_origins_means_no_cors() -> None:
    assert CorsPolicy.from_settings(Settings()) is None


@pytest_asyncio.fixture(loop_scope="session")
async def make_client(tmp_path: Path) -> AsyncIterator[ClientFactory]:
    clients: list[Client] = []

    async def make(**overrides: Any) -> Client:
        values: dict[str, Any] = {
            "data_dir": tmp_path,
            "auth_enabled": True,
            "audit_enabled": False,
            "cors_allowed_origins": [VIEWER, "http://localhost:3000"],
        }
        values.update(overrides)
        settings = Settings(**values)

        async def studies(_: web.Request) -> web.Response:
            return web.json_response([], headers={"Content-Location": "/x", "ETag": '"1"'})

        app = web.Application(middlewares=[error_middleware])
        app.router.add_get("/healthz", studies)
        app.router.add_get(B + "/studies", studies)
        app.router.add_post(B + "/studies", studies)
        setup_security(app, settings)
        setup_cors(app, settings)
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


def preflight_headers(origin: str, method: str, headers: str | None = None) -> dict[str, str]:
    sent = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers is not None:
        sent["Access-Control-Request-Headers"] = headers
    return sent


PREFLIGHTS = [
    ("qido-with-auth", VIEWER, "GET", "authorization,accept", 204),
    ("stow", VIEWER, "POST", "authorization, content-type", 204),
    ("range-and-etag", "http://localhost:3000", "GET", "range,if-none-match", 204),
    ("origin-case-insensitive", "HTTPS://VIEWER.EXAMPLE", "GET", None, 204),
    ("other-origin", OTHER, "GET", "authorization", 403),
    ("null-origin", "null", "GET", None, 403),
    ("method-not-allowed", VIEWER, "PUT", None, 403),
    ("header-not-allowed", VIEWER, "GET", "authorization,x-patient-name", 403),
]


@pytest.mark.parametrize(
    ("origin", "method", "headers", "status"),
    [p[1:] for p in PREFLIGHTS],
    ids=[p[0] for p in PREFLIGHTS],
)
async def test_preflight(
    make_client: ClientFactory, origin: str, method: str, headers: str | None, status: int
) -> None:
    client = await make_client()
    response = await client.options(
        B + "/studies", headers=preflight_headers(origin, method, headers)
    )
    assert response.status == status, "preflights need no credentials, even with auth on"
    if status == 403:
        assert "Access-Control-Allow-Origin" not in response.headers
        return
    assert response.headers["Access-Control-Allow-Origin"] == origin
    assert response.headers["Access-Control-Allow-Methods"] == "GET, HEAD, POST, DELETE"
    allowed = response.headers["Access-Control-Allow-Headers"]
    assert allowed == "Authorization, Accept, Content-Type, If-None-Match, Range"
    assert response.headers["Access-Control-Max-Age"] == "600"
    assert "Access-Control-Allow-Credentials" not in response.headers
    assert "Origin" in response.headers["Vary"]


async def test_preflight_to_any_path(make_client: ClientFactory) -> None:
    client = await make_client()
    response = await client.options(
        B + "/studies/1.2.3/series", headers=preflight_headers(VIEWER, "GET")
    )
    assert response.status == 204


async def test_plain_options_is_answered_without_cors_headers(make_client: ClientFactory) -> None:
    client = await make_client()
    response = await client.options(B + "/studies")
    assert response.status == 204
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "GET" in response.headers["Allow"]


async def test_actual_request_from_allowed_origin(
    make_client: ClientFactory, tmp_path: Path
) -> None:
    key = create_key(Settings(data_dir=tmp_path), "viewer", ["read"]).key
    client = await make_client()
    response = await client.get(
        B + "/studies", headers={"Origin": VIEWER, "Authorization": f"Bearer {key}"}
    )
    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == VIEWER
    exposed = response.headers["Access-Control-Expose-Headers"]
    for name in ("Content-Location", "ETag", "Warning", "Content-Range", "WWW-Authenticate"):
        assert name in exposed
    assert response.headers["Vary"] == "Origin"


async def test_errors_carry_cors_headers_so_viewers_can_read_them(
    make_client: ClientFactory,
) -> None:
    client = await make_client()
    unauthorized = await client.get(B + "/studies", headers={"Origin": VIEWER})
    assert unauthorized.status == 401
    assert unauthorized.headers["Access-Control-Allow-Origin"] == VIEWER
    assert "WWW-Authenticate" in unauthorized.headers["Access-Control-Expose-Headers"]
    not_allowed = await client.put(B + "/studies", headers={"Origin": VIEWER})
    assert not_allowed.headers["Access-Control-Allow-Origin"] == VIEWER


async def test_other_origin_gets_no_cors_headers(make_client: ClientFactory) -> None:
    client = await make_client()
    response = await client.get("/healthz", headers={"Origin": OTHER})
    assert response.status == 200
    assert "Access-Control-Allow-Origin" not in response.headers
    assert response.headers["Vary"] == "Origin", "caches must not reuse it for the viewer"


async def test_wildcard_with_auth_off(make_client: ClientFactory) -> None:
    client = await make_client(auth_enabled=False, cors_allowed_origins=["*"])
    response = await client.get(B + "/studies", headers={"Origin": OTHER})
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "Vary" not in response.headers
    preflight = await client.options(
        B + "/studies", headers=preflight_headers(OTHER, "POST", "content-type")
    )
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"], (
        "a wildcard never covers Authorization: list it"
    )


async def test_credentials_echo_the_origin(make_client: ClientFactory) -> None:
    client = await make_client(cors_allow_credentials=True)
    response = await client.options(B + "/studies", headers=preflight_headers(VIEWER, "GET"))
    assert response.headers["Access-Control-Allow-Origin"] == VIEWER
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    actual = await client.get("/healthz", headers={"Origin": VIEWER})
    assert actual.headers["Access-Control-Allow-Credentials"] == "true"
