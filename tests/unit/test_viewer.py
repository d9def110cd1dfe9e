"""The OHIF viewer at ``/viewer`` (``viewer_assets`` rules, ``viewer`` routes): safe paths, the
generated ``app-config.js``, relocation of OHIF's root-relative references, SPA fallback, media
types, caching and access. The routes run on a small app on loopback with a fake viewer build."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tessera_common.settings import Settings
from tessera_gateway.access import PUBLIC, Scope, required_access
from tessera_gateway.context import SETTINGS
from tessera_gateway.viewer import ViewerConfigError, setup_viewer
from tessera_gateway.viewer_assets import (
    IMMUTABLE,
    REVALIDATE,
    UnsafePathError,
    app_config,
    app_config_js,
    apply_splices,
    cache_control,
    is_client_route,
    js_splices,
    media_type,
    relative_path,
    resolve_inside,
    scan_js,
    text_splices,
    viewer_prefix,
)

INDEX = (
    '<html><head><script>window.PUBLIC_URL="/"</script><link rel="manifest" href="/manifest.json">'
    '<meta name="x" content="/assets/a.png"><script src="/app-config.js"></script>'
    '<script src="//cdn.example/x.js"></script><script defer src="/app.bundle.0123456789abcdef.js">'
    "</script></head><body></body></html>"
)
BUNDLE = (
    'var a=1;\n__webpack_require__.p = "/";\n'
    "x = await import('/dicom-microscopy-viewer/dicomMicroscopyViewer.min.js');\n"
)


# --- pure rules ----------------------------------------------------------------------------------

SAFE_PATHS = [
    ("", PurePosixPath()),
    ("index.html", PurePosixPath("index.html")),
    ("assets/favicon.ico", PurePosixPath("assets/favicon.ico")),
    ("viewer/", PurePosixPath("viewer")),
]
UNSAFE_PATHS = ["..", "../etc/passwd", "assets/../../x", "./index.html", "a//b", ".git/config",
                "assets/.env", "a\\..\\b", "a\x00b"]  # fmt: skip


@pytest.mark.parametrize(("tail", "expected"), SAFE_PATHS, ids=[t or "root" for t, _ in SAFE_PATHS])
def test_relative_path_accepts(tail: str, expected: PurePosixPath) -> None:
    assert relative_path(tail) == expected


@pytest.mark.parametrize("tail", UNSAFE_PATHS)
def test_relative_path_refuses(tail: str) -> None:
    with pytest.raises(UnsafePathError):
        relative_path(tail)


def test_resolve_inside_refuses_a_symlink_out_of_the_root(tmp_path: Path) -> None:
    root = tmp_path / "dist"
    root.mkdir()
    (tmp_path / "secret.txt").write_text("secret")
    (root / "link.txt").symlink_to(tmp_path / "secret.txt")
    (root / "ok.js").write_text("ok")
    (root / "dir").mkdir()
    assert resolve_inside(root, PurePosixPath("link.txt")) is None
    assert resolve_inside(root, PurePosixPath("dir")) is None
    assert resolve_inside(root, PurePosixPath("missing.js")) is None
    assert resolve_inside(root, PurePosixPath("ok.js")) == (root / "ok.js").resolve()


@pytest.mark.parametrize(
    ("name", "expected"),
    [("viewer", True), ("microscopy", True), ("app.js", False), ("favicon.ico", False)],
)
def test_client_routes_have_no_dot(name: str, expected: bool) -> None:
    assert is_client_route(PurePosixPath(name)) is expected


MEDIA = [
    ("a.js", "text/javascript; charset=utf-8"),
    ("a.wasm", "application/wasm"),
    ("a.css", "text/css; charset=utf-8"),
    ("index.html", "text/html; charset=utf-8"),
    ("a.woff2", "font/woff2"),
    ("a.json", "application/json"),
    ("a.unknown", "application/octet-stream"),
]


@pytest.mark.parametrize(("name", "expected"), MEDIA, ids=[n for n, _ in MEDIA])
def test_media_types(name: str, expected: str) -> None:
    assert media_type(PurePosixPath(name)) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("1602.bundle.94f12cceab7c2762.js", IMMUTABLE),
        ("0ddf166f7a343eda.wasm", IMMUTABLE),
        ("app-config.js", REVALIDATE),
        ("index.html", REVALIDATE),
        ("sw.js", REVALIDATE),
    ],
)
def test_cache_control(name: str, expected: str) -> None:
    assert cache_control(PurePosixPath(name)) == expected


def test_index_html_is_relocated() -> None:
    html = INDEX.encode()
    relocated = apply_splices(html, text_splices(".html", html, "/viewer")).decode()
    assert 'window.PUBLIC_URL="/viewer/"' in relocated
    assert 'href="/viewer/manifest.json"' in relocated
    assert 'content="/viewer/assets/a.png"' in relocated
    assert 'src="/viewer/app-config.js"' in relocated
    assert 'src="//cdn.example/x.js"' in relocated  # protocol-relative: not ours
    assert 'src="/viewer/app.bundle.0123456789abcdef.js"' in relocated


def test_css_urls_are_relocated() -> None:
    css = b"a{src:url(/a.woff2)} b{src:url('/b.woff2')} c{src:url(//cdn/c.woff2)}"
    relocated = apply_splices(css, text_splices(".css", css, "/viewer"))
    assert relocated == (
        b"a{src:url(/viewer/a.woff2)} b{src:url('/viewer/b.woff2')} c{src:url(//cdn/c.woff2)}"
    )


@pytest.mark.parametrize("chunk_size", [1, 7, 30, 4096])
def test_js_markers_are_found_across_chunk_boundaries(chunk_size: int) -> None:
    data = BUNDLE.encode() * 3
    chunks = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]
    relocated = apply_splices(data, js_splices(scan_js(chunks), "/viewer")).decode()
    assert relocated.count('__webpack_require__.p = "/viewer/";') == 3
    assert relocated.count("import('/viewer/dicom-microscopy-viewer/") == 3
    assert '__webpack_require__.p = "/";' not in relocated


def test_app_config_points_ohif_at_this_server() -> None:
    root = "http://127.0.0.1:8080/dicom-web"
    script = app_config_js(root, "/viewer").decode()
    assert script.rstrip().endswith(";")
    parsed = json.loads(script.split("window.config = ", 1)[1].rstrip().rstrip(";"))
    assert parsed == app_config(root, "/viewer")
    assert parsed["routerBasename"] == "/viewer"
    (source,) = parsed["dataSources"]
    assert parsed["defaultDataSourceName"] == source["sourceName"]
    config = source["configuration"]
    assert config["qidoRoot"] == config["wadoRoot"] == root
    assert config["wadoUriRoot"] == root + "/wado"
    assert config["imageRendering"] == "wadors"
    assert config["thumbnailRendering"] == "thumbnail"
    assert config["supportsFuzzyMatching"] and config["supportsWildcard"]
    assert config["enableStudyLazyLoad"] and config["bulkDataURI"]["enabled"]


def test_app_config_escapes_its_strings() -> None:
    script = app_config_js('http://h/x"</script><script>alert(1)', "/viewer").decode()
    assert '"http://h/x\\"</script>' in script


@pytest.mark.parametrize(
    ("public_url", "base", "expected"),
    [
        (None, "/dicom-web", "/viewer"),
        ("https://pacs.example/dicom-web", "/dicom-web", "/viewer"),
        ("https://pacs.example/tessera/dicom-web/", "/dicom-web", "/tessera/viewer"),
        ("https://pacs.example/other", "/dicom-web", "/viewer"),
    ],
)
def test_viewer_prefix(public_url: str | None, base: str, expected: str) -> None:
    assert viewer_prefix(public_url, base) == expected


@pytest.mark.parametrize("route", ["/viewer", "/viewer/{tail}"])
def test_viewer_routes_are_public_to_read(route: str) -> None:
    assert required_access("GET", route, base_path="/dicom-web") == PUBLIC
    assert required_access("HEAD", route, base_path="/dicom-web") == PUBLIC
    assert required_access("POST", route, base_path="/dicom-web").scope == Scope.ADMIN


def test_a_base_path_named_viewer_stays_protected() -> None:
    access = required_access("GET", "/viewer/studies", base_path="/viewer")
    assert access.scope == Scope.READ


# --- routes --------------------------------------------------------------------------------------


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    root = tmp_path / "dist"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_text(INDEX)
    (root / "app-config.js").write_text("window.config = {}; // OHIF's, never served")
    (root / "app.bundle.0123456789abcdef.js").write_text(BUNDLE)
    (root / "0ddf166f7a343eda.wasm").write_bytes(b"\0asm\1\0\0\0")
    (root / "app.bundle.css").write_text("a{src:url(/a.woff2)}")
    (root / "assets" / "favicon.ico").write_bytes(b"ico")
    (root / ".hidden").write_text("no")
    (tmp_path / "outside.txt").write_text("secret")
    (root / "escape.txt").symlink_to(tmp_path / "outside.txt")
    return root


def _app(settings: Settings) -> web.Application:
    app = web.Application()
    app[SETTINGS] = settings
    setup_viewer(app, settings)
    return app


@pytest_asyncio.fixture
async def client(
    dist: Path, tmp_path: Path
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    settings = Settings(data_dir=tmp_path / "data", viewer_dir=dist)
    async with TestClient(TestServer(_app(settings))) as test_client:
        yield test_client


async def test_root_serves_relocated_index(
    client: TestClient[web.Request, web.Application],
) -> None:
    response = await client.get("/viewer/")
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.headers["Cache-Control"] == REVALIDATE
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    body = await response.text()
    assert 'src="/viewer/app.bundle.0123456789abcdef.js"' in body
    assert int(response.headers["Content-Length"]) == len(body.encode())
    redirect = await client.get("/viewer?x=1", allow_redirects=False)
    assert redirect.status == 302
    assert redirect.headers["Location"] == "/viewer/?x=1"


@pytest.mark.parametrize("path", ["/viewer/viewer", "/viewer/microscopy/x", "/viewer/local/"])
async def test_client_routes_fall_back_to_index(
    client: TestClient[web.Request, web.Application], path: str
) -> None:
    response = await client.get(path)
    assert response.status == 200
    assert 'window.PUBLIC_URL="/viewer/"' in await response.text()


@pytest.mark.parametrize(
    "path",
    [
        "/viewer/missing.js",
        "/viewer/.hidden",
        "/viewer/escape.txt",
        "/viewer/%2e%2e/outside.txt",
        "/viewer/assets/%2e%2e%2f%2e%2e%2foutside.txt",
        "/viewer/assets/..%5c..%5coutside.txt",
    ],
)
async def test_unsafe_or_missing_files_are_404(
    client: TestClient[web.Request, web.Application], path: str
) -> None:
    response = await client.get(path)
    assert response.status == 404
    assert "secret" not in await response.text()


async def test_bundle_is_streamed_relocated_with_etag(
    client: TestClient[web.Request, web.Application],
) -> None:
    response = await client.get("/viewer/app.bundle.0123456789abcdef.js")
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert response.headers["Cache-Control"] == IMMUTABLE
    body = await response.text()
    assert '__webpack_require__.p = "/viewer/";' in body
    assert "import('/viewer/dicom-microscopy-viewer/" in body
    assert int(response.headers["Content-Length"]) == len(body.encode())
    etag = response.headers["ETag"]
    again = await client.get(
        "/viewer/app.bundle.0123456789abcdef.js", headers={"If-None-Match": etag}
    )
    assert again.status == 304
    head = await client.head("/viewer/app.bundle.0123456789abcdef.js")
    assert head.headers["Content-Length"] == response.headers["Content-Length"]


async def test_static_files_keep_their_bytes(
    client: TestClient[web.Request, web.Application],
) -> None:
    wasm = await client.get("/viewer/0ddf166f7a343eda.wasm")
    assert wasm.headers["Content-Type"] == "application/wasm"
    assert await wasm.read() == b"\0asm\1\0\0\0"
    css = await client.get("/viewer/app.bundle.css")
    assert await css.text() == "a{src:url(/viewer/a.woff2)}"


async def test_app_config_is_generated_for_the_request_host(
    client: TestClient[web.Request, web.Application],
) -> None:
    response = await client.get("/viewer/app-config.js")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/javascript")
    assert response.headers["Cache-Control"] == REVALIDATE
    body = await response.text()
    assert f'"qidoRoot": "http://{client.host}:{client.port}/dicom-web"' in body
    assert "OHIF's, never served" not in body


async def test_app_config_file_replaces_the_generated_one(dist: Path, tmp_path: Path) -> None:
    custom = tmp_path / "my-config.js"
    custom.write_text("window.config = {oidc: []};")
    settings = Settings(data_dir=tmp_path / "d", viewer_dir=dist, viewer_app_config=custom)
    async with TestClient(TestServer(_app(settings))) as test_client:
        response = await test_client.get("/viewer/app-config.js")
        assert await response.text() == "window.config = {oidc: []};"


def test_a_viewer_dir_without_index_is_refused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, viewer_dir=tmp_path)
    with pytest.raises(ViewerConfigError, match=r"index\.html"):
        _app(settings)


def test_no_viewer_dir_no_routes(tmp_path: Path) -> None:
    app = _app(Settings(data_dir=tmp_path))
    assert not list(app.router.routes())


def test_a_changed_file_is_scanned_again(dist: Path, tmp_path: Path) -> None:
    from tessera_gateway.viewer import ViewerFiles

    files = ViewerFiles(root=dist, prefix="/viewer")
    bundle = dist / "app.bundle.0123456789abcdef.js"
    assert len(files.splices(bundle)[2]) == 2
    bundle.write_text("no markers")
    os.utime(bundle, ns=(1, 1))
    assert files.splices(bundle)[2] == ()
