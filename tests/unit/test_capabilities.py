"""The capabilities table against the router, and the documents made from it: the WADL
Capabilities Description and its JSON form (PS3.18 §8.9, Annex H), the OpenAPI document, the
routes that serve them (on a small app on loopback) and who may read them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import orjson
import pytest
import pytest_asyncio
import schemathesis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from schemathesis.core.result import Ok

from tessera_common.settings import Settings
from tessera_gateway.access import PUBLIC, Access, Scope, required_access
from tessera_gateway.app import add_dicomweb_routes, build_app
from tessera_gateway.capabilities import (
    RESOURCES,
    ROUTE_ALIASES,
    UID_PATTERN,
    Support,
    dicomweb_resources,
    operations,
)
from tessera_gateway.capabilities_routes import add_capability_routes
from tessera_gateway.context import SETTINGS
from tessera_gateway.cors import setup_cors
from tessera_gateway.errors import error_middleware
from tessera_gateway.openapi import build_openapi, fuzzable_operation_ids
from tessera_gateway.wadl import WADL_NAMESPACE, UnknownResourceError, description, to_json, to_wadl

B = "/dicom-web"
W = "{" + WADL_NAMESPACE + "}"
UID = "1.2.840.113619.2.55.3"


def _described(base: str) -> set[tuple[str, str]]:
    return {(method.name, resource.full_path(base)) for resource, method in operations()}


def _routes(app: web.Application) -> set[tuple[str, str]]:
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method not in ("HEAD", "OPTIONS")
    }


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> web.Application:
    settings = Settings(data_dir=tmp_path_factory.mktemp("gateway"), audit_enabled=False)
    return build_app(settings)


def test_every_route_is_described(gateway: web.Application) -> None:
    described = _described(B)
    aliases = {B + alias for alias in ROUTE_ALIASES}
    missing = {
        (method, path)
        for method, path in _routes(gateway)
        if (method, path) not in described and path not in aliases
    }
    assert not missing, f"add these routes to capabilities.RESOURCES: {sorted(missing)}"


def test_every_supported_method_is_routed(gateway: web.Application) -> None:
    routed = _routes(gateway)
    unrouted = [
        f"{method.name} {resource.full_path(B)}"
        for resource, method in operations(include_in_progress=False)
        if (method.name, resource.full_path(B)) not in routed
    ]
    assert not unrouted, f"marked supported but not routed: {unrouted}"


def test_options_is_routed_on_every_routed_dicomweb_resource(gateway: web.Application) -> None:
    options = {
        route.resource.canonical
        for route in gateway.router.routes()
        if route.method == "OPTIONS" and route.resource is not None
    }
    routed = {path for _, path in _routes(gateway)}
    for resource in dicomweb_resources():
        if resource.full_path(B) in routed:
            assert resource.full_path(B) in options, resource.path


def test_operation_ids_are_unique() -> None:
    ids = [method.id for _, method in operations()]
    assert len(ids) == len(set(ids))


# --- WADL and JSON ------------------------------------------------------------------------------


def test_wadl_describes_every_dicomweb_method() -> None:
    root = ElementTree.fromstring(to_wadl(description("http://host/dicom-web")))
    assert root.tag == W + "application"
    resources = root.find(W + "resources")
    assert resources is not None
    assert resources.get("base") == "http://host/dicom-web/"
    ids = {method.get("id") for method in root.iter(W + "method")}
    expected = {m.id for r in dicomweb_resources() for m in r.methods}
    assert ids == expected
    assert "RetrieveCapabilities" not in ids  # Annex H: WADL is not self-describing


def test_wadl_template_parameters_sit_on_their_resource() -> None:
    root = ElementTree.fromstring(to_wadl(description("http://host/dicom-web")))
    study = next(r for r in root.iter(W + "resource") if r.get("path") == "{study}")
    params = [p.get("name") for p in study.findall(W + "param")]
    assert params == ["study"]
    assert {m.get("id") for m in study.findall(W + "method")} >= {"RetrieveStudy", "DeleteStudy"}
    frames = next(r for r in root.iter(W + "resource") if r.get("path") == "frames/{frames}")
    assert [p.get("style") for p in frames.findall(W + "param")] == ["template"]


TARGETS = [
    ("root", "/", None),
    ("studies", "/studies", "studies"),
    ("study", "/studies/{study}", "studies/{study}"),
    ("instance", "/studies/{study}/series/{series}/instances/{instance}",
     "studies/{study}/series/{series}/instances/{instance}"),
    ("wado-uri", "/wado", "wado"),
]  # fmt: skip


@pytest.mark.parametrize(("target", "path"), [t[1:] for t in TARGETS], ids=[t[0] for t in TARGETS])
def test_target_resource_and_its_children(target: str, path: str | None) -> None:
    tree = description("http://host/dicom-web", target)
    resources = tree["application"]["resources"]["resource"]
    if path is None:
        assert [r["path"] for r in resources] == ["studies", "series", "instances", "wado"]
        return
    assert [r["path"] for r in resources] == [path]
    names = {p["name"] for p in resources[0]["param"]}
    assert names == {s.strip("{}") for s in path.split("/") if s.startswith("{")}


def test_unknown_target_is_refused() -> None:
    with pytest.raises(UnknownResourceError):
        description("http://host/dicom-web", "/patients")


def test_json_form_is_the_same_tree() -> None:
    tree = description("http://host/dicom-web")
    assert orjson.loads(to_json(tree)) == tree


# --- OpenAPI -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def document() -> dict[str, object]:
    return build_openapi(B)


def _loaded_operations(document: dict[str, object]) -> list[Any]:
    """The operations schemathesis reads from ``document`` (failing on any it cannot)."""
    operations_ = []
    for result in schemathesis.openapi.from_dict(document).get_all_operations():
        assert isinstance(result, Ok), result.err()
        operations_.append(result.ok())
    return operations_


def test_openapi_loads_in_schemathesis(document: dict[str, object]) -> None:
    labels = [operation.label for operation in _loaded_operations(document)]
    assert len(labels) == sum(1 for _ in operations())


def test_openapi_uid_parameters(document: dict[str, object]) -> None:
    for operation in _loaded_operations(document):
        for param in operation.definition.raw.get("parameters", []):
            if param["name"] in ("study", "series", "instance"):
                assert param["in"] == "path" and param["required"]
                assert param["schema"] == {"type": "string", "pattern": UID_PATTERN,
                                           "maxLength": 64}  # fmt: skip


def test_multipart_bodies_are_left_out_of_fuzzing(document: dict[str, object]) -> None:
    fuzzed = set(fuzzable_operation_ids(document))
    assert {"StoreInstances", "StoreStudyInstances"}.isdisjoint(fuzzed)
    assert {"SearchForStudies", "RetrieveFrames", "RetrieveInstanceWADOURI"} <= fuzzed


SECURITY = [
    ("capabilities", "/dicom-web/", "get", []),
    ("openapi", "/openapi.json", "get", []),
    ("healthz", "/healthz", "get", []),
    ("qido", "/dicom-web/studies", "get", [{"bearerJWT": ["read"]}, {"apiKey": ["read"]}]),
    ("stow", "/dicom-web/studies", "post", [{"bearerJWT": ["write"]}, {"apiKey": ["write"]}]),
    ("delete", "/dicom-web/studies/{study}", "delete",
     [{"bearerJWT": ["delete"]}, {"apiKey": ["delete"]}]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "method", "security"), [s[1:] for s in SECURITY], ids=[s[0] for s in SECURITY]
)
def test_openapi_security_follows_access(
    document: dict[str, dict[str, dict[str, dict[str, object]]]],
    path: str,
    method: str,
    security: list[object],
) -> None:
    operation = document["paths"][path][method]
    assert operation["security"] == security
    responses = operation["responses"]
    assert isinstance(responses, dict)
    assert ("401" in responses) == bool(security)


def test_in_progress_rows_are_marked(document: dict[str, dict[str, dict[str, object]]]) -> None:
    marked = {
        op["operationId"]
        for item in document["paths"].values()
        for op in item.values()
        if isinstance(op, dict) and op.get("x-tessera-support") == "in progress"
    }
    expected = {m.id for _, m in operations() if m.support is Support.IN_PROGRESS}
    assert marked == expected


# --- access ---------------------------------------------------------------------------------------

ACCESS = [
    ("capabilities", "GET", B + "/", PUBLIC),
    ("capabilities-bare", "GET", B, PUBLIC),
    ("capabilities-head", "HEAD", B + "/", PUBLIC),
    ("capabilities-options", "OPTIONS", B + "/studies/{study}", PUBLIC),
    ("openapi", "GET", "/openapi.json", PUBLIC),
    ("post-root-is-admin", "POST", B + "/", Access(scope=Scope.ADMIN)),
    ("changefeed", "GET", B + "/changefeed", Access(scope=Scope.READ)),
]


@pytest.mark.parametrize(
    ("method", "route", "expected"), [a[1:] for a in ACCESS], ids=[a[0] for a in ACCESS]
)
def test_required_access(method: str, route: str, expected: Access) -> None:
    assert required_access(method, route, base_path=B) == expected


# --- served on loopback -------------------------------------------------------------------------

Client = TestClient[web.Request, web.Application]


@pytest_asyncio.fixture(loop_scope="session")
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    app = web.Application(middlewares=[error_middleware])
    app[SETTINGS] = Settings(data_dir=tmp_path, public_url="http://archive.example/dicom-web")
    add_dicomweb_routes(app.router, B)
    add_capability_routes(app.router, B)
    test_client = TestClient(TestServer(app, host="127.0.0.1"))
    await test_client.start_server()
    yield test_client
    await test_client.close()


NEGOTIATION = [
    ("no-accept", "GET", B, None, 200, "application/vnd.sun.wadl+xml"),
    ("any", "GET", B + "/", "*/*", 200, "application/vnd.sun.wadl+xml"),
    ("wadl", "OPTIONS", B + "/", "application/vnd.sun.wadl+xml", 200,
     "application/vnd.sun.wadl+xml"),
    ("json", "GET", B + "/", "application/json", 200, "application/json"),
    ("dicom-json", "OPTIONS", B + "/", "application/dicom+json", 200, "application/dicom+json"),
    ("preferred-json", "GET", B, "application/vnd.sun.wadl+xml;q=0.5, application/json", 200,
     "application/json"),
    ("unacceptable", "GET", B + "/", "image/png", 406, "application/json"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "accept", "status", "media_type"),
    [n[1:] for n in NEGOTIATION],
    ids=[n[0] for n in NEGOTIATION],
)
async def test_capabilities_negotiation(
    client: Client, method: str, path: str, accept: str | None, status: int, media_type: str
) -> None:
    headers = {"Accept": accept} if accept is not None else {}
    response = await client.request(method, path, headers=headers)
    assert response.status == status
    assert response.content_type == media_type
    if media_type == "application/vnd.sun.wadl+xml":
        root = ElementTree.fromstring(await response.read())
        base = root.find(W + "resources")
        assert base is not None and base.get("base") == "http://archive.example/dicom-web/"


async def test_options_on_a_resource_describes_that_resource(client: Client) -> None:
    response = await client.options(f"{B}/studies/{UID}", headers={"Accept": "application/json"})
    assert response.status == 200
    tree = await response.json()
    [resource] = tree["application"]["resources"]["resource"]
    assert resource["path"] == "studies/{study}"
    assert {"GET", "POST", "DELETE"} <= set(response.headers["Allow"].split(", "))


async def test_options_on_bulkdata(client: Client) -> None:
    path = f"{B}/studies/{UID}/series/{UID}/instances/{UID}/bulkdata/00540016/0/00181072"
    response = await client.options(path, headers={"Accept": "application/json"})
    assert response.status == 200
    [resource] = (await response.json())["application"]["resources"]["resource"]
    assert resource["path"].endswith("bulkdata/{path}")


async def test_served_openapi_lists_only_routed_operations(client: Client) -> None:
    response = await client.get("/openapi.json")
    assert response.status == 200
    document = await response.json()
    ids = {op["operationId"] for item in document["paths"].values() for op in item.values()}
    assert {"SearchForStudies", "RetrieveFrames", "RetrieveCapabilities", "OpenAPI"} <= ids
    assert "RetrieveChangeFeed" not in ids  # not routed by this app
    assert "Liveness" not in ids
    assert len(RESOURCES) > len(document["paths"])


async def test_cors_preflight_still_goes_to_the_cors_policy(tmp_path: Path) -> None:
    viewer = "https://viewer.example"
    settings = Settings(data_dir=tmp_path, cors_allowed_origins=[viewer])
    app = web.Application(middlewares=[error_middleware])
    app[SETTINGS] = settings
    add_dicomweb_routes(app.router, B)
    add_capability_routes(app.router, B)
    setup_cors(app, settings)
    async with TestClient(TestServer(app, host="127.0.0.1")) as cors_client:
        preflight = await cors_client.options(
            f"{B}/studies", headers={"Origin": viewer, "Access-Control-Request-Method": "GET"}
        )
        assert preflight.status == 204
        assert preflight.headers["Access-Control-Allow-Origin"] == viewer
        plain = await cors_client.options(f"{B}/studies", headers={"Origin": viewer})
        assert plain.status == 200
        assert plain.content_type == "application/vnd.sun.wadl+xml"
        assert plain.headers["Access-Control-Allow-Origin"] == viewer
