"""The OHIF viewer, served below ``/viewer`` when ``TESSERA_VIEWER_DIR`` names its ``dist/``.

- ``GET /viewer/app-config.js``: generated (``viewer_assets.app_config_js``): OHIF's DICOMweb
  data source is this server's DICOMweb root; ``TESSERA_VIEWER_APP_CONFIG`` replaces it by a
  file of the operator's (e.g. with an ``oidc`` section).
- ``GET /viewer/<file>``: the file, resolved inside the viewer root (no ``..``, no hidden
  names, no symbolic link out of it), streamed; the few root-relative references of OHIF's
  build are relocated on the way (``viewer_assets.splices``).
- ``GET /viewer/<client route>`` (no dot in the last segment, e.g. ``/viewer/viewer``): OHIF's
  ``index.html`` — a single-page application routes in the browser.

Public (``access.required_access``): the files are OHIF's build and a configuration naming the
DICOMweb root — no data, no PHI; every DICOMweb request the viewer then makes is authorized as
usual. See docs/OHIF.md.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from aiohttp import hdrs, web

from tessera_common.settings import Settings

from .context import service_root
from .viewer_assets import (
    MAX_REWRITTEN_TEXT,
    REVALIDATE,
    VIEWER_PATH,
    Splice,
    UnsafePathError,
    app_config_js,
    cache_control,
    is_client_route,
    js_splices,
    media_type,
    relative_path,
    resolve_inside,
    scan_js,
    spliced_length,
    text_splices,
    viewer_prefix,
)

CHUNK = 256 * 1024
INDEX = PurePosixPath("index.html")
APP_CONFIG = PurePosixPath("app-config.js")
_COMMON_HEADERS = {"X-Content-Type-Options": "nosniff"}


class ViewerConfigError(ValueError):
    """``TESSERA_VIEWER_DIR`` does not hold a viewer build."""


@dataclass
class ViewerFiles:
    """The viewer root, its public prefix, and the splices found per file (by mtime and size)."""

    root: Path
    prefix: str
    app_config_file: Path | None = None
    _splices: dict[Path, tuple[int, int, tuple[Splice, ...]]] = field(default_factory=dict)

    def splices(self, path: Path) -> tuple[int, int, tuple[Splice, ...]]:
        """``(mtime_ns, size, splices)`` of ``path``; blocking (reads the file once)."""
        stat = path.stat()
        cached = self._splices.get(path)
        if cached is not None and cached[:2] == (stat.st_mtime_ns, stat.st_size):
            return cached
        entry = (stat.st_mtime_ns, stat.st_size, self._find_splices(path, stat.st_size))
        self._splices[path] = entry
        return entry

    def _find_splices(self, path: Path, size: int) -> tuple[Splice, ...]:
        suffix = path.suffix.lower()
        if suffix in (".html", ".css"):
            if size > MAX_REWRITTEN_TEXT:
                return ()
            return text_splices(suffix, path.read_bytes(), self.prefix)
        if suffix not in (".js", ".mjs"):
            return ()
        with path.open("rb") as file:
            found = scan_js(iter(lambda: file.read(4 * 1024**2), b""))
        return js_splices(found, self.prefix)


VIEWER_FILES = web.AppKey("viewer_files", ViewerFiles)


def setup_viewer(app: web.Application, settings: Settings) -> None:
    """Route ``/viewer`` when ``settings.viewer_dir`` is set; raise ``ViewerConfigError`` when
    it holds no ``index.html``."""
    if settings.viewer_dir is None:
        return
    root = settings.viewer_dir.resolve()
    if not (root / "index.html").is_file():
        raise ViewerConfigError(
            f"TESSERA_VIEWER_DIR={settings.viewer_dir} has no index.html: point it at OHIF's "
            "dist/ (scripts/install-viewer.sh installs one and prints its path)"
        )
    app_config_file = settings.viewer_app_config
    if app_config_file is not None and not app_config_file.is_file():
        raise ViewerConfigError(f"TESSERA_VIEWER_APP_CONFIG={app_config_file} is not a file")
    prefix = viewer_prefix(settings.public_url, settings.base_path)
    app[VIEWER_FILES] = ViewerFiles(root=root, prefix=prefix, app_config_file=app_config_file)
    app.router.add_get(VIEWER_PATH, redirect_to_viewer)
    app.router.add_get(VIEWER_PATH + "/{tail:.*}", serve_viewer)


async def redirect_to_viewer(request: web.Request) -> web.StreamResponse:
    """``/viewer`` -> ``/viewer/`` (with the query): OHIF's relative paths need the slash."""
    location = request.app[VIEWER_FILES].prefix + "/"
    if request.query_string:
        location += "?" + request.query_string
    raise web.HTTPFound(location, headers=_COMMON_HEADERS)


async def serve_viewer(request: web.Request) -> web.StreamResponse:
    files = request.app[VIEWER_FILES]
    try:
        relative = relative_path(request.match_info["tail"])
    except UnsafePathError:
        return _not_found()
    if relative == APP_CONFIG:
        return await _app_config(request, files)
    wanted = INDEX if relative == PurePosixPath() else relative
    target = await asyncio.to_thread(resolve_inside, files.root, wanted)
    if target is None and is_client_route(relative):
        target = await asyncio.to_thread(resolve_inside, files.root, INDEX)
    if target is None:
        return _not_found()
    mtime_ns, size, edits = await asyncio.to_thread(files.splices, target)
    headers = {
        **_COMMON_HEADERS,
        hdrs.CONTENT_TYPE: media_type(target),
        hdrs.CACHE_CONTROL: REVALIDATE if target.name == INDEX.name else cache_control(target),
    }
    if not edits:
        return web.FileResponse(target, chunk_size=CHUNK, headers=headers)
    return await _stream_spliced(request, target, headers, (mtime_ns, size, edits), files.prefix)


async def _app_config(request: web.Request, files: ViewerFiles) -> web.Response:
    if files.app_config_file is not None:
        body = await asyncio.to_thread(files.app_config_file.read_bytes)
    else:
        body = app_config_js(service_root(request), files.prefix)
    headers = {**_COMMON_HEADERS, hdrs.CACHE_CONTROL: REVALIDATE}
    return web.Response(body=body, content_type="text/javascript", charset="utf-8", headers=headers)


async def _stream_spliced(
    request: web.Request,
    path: Path,
    headers: dict[str, str],
    entry: tuple[int, int, tuple[Splice, ...]],
    prefix: str,
) -> web.StreamResponse:
    """``path`` with its splices applied, read and sent ``CHUNK`` bytes at a time."""
    mtime_ns, size, edits = entry
    etag = f"{mtime_ns:x}-{size:x}-{prefix.encode().hex()}"
    if any(tag.value == etag or tag.value == "*" for tag in request.if_none_match or ()):
        response = web.StreamResponse(status=304, headers=headers)
        response.etag = etag
        await response.prepare(request)
        return response
    response = web.StreamResponse(headers=headers)
    response.etag = etag
    response.content_length = spliced_length(size, edits)
    await response.prepare(request)
    if request.method == hdrs.METH_HEAD:
        return response
    file: BinaryIO = await asyncio.to_thread(path.open, "rb")
    try:
        position = 0
        for edit in (*edits, Splice(size, 0, b"")):
            await _copy(file, response, edit.offset - position)
            await response.write(edit.replacement)
            await asyncio.to_thread(file.seek, edit.length, 1)
            position = edit.offset + edit.length
    finally:
        await asyncio.to_thread(file.close)
    await response.write_eof()
    return response


async def _copy(file: BinaryIO, response: web.StreamResponse, count: int) -> None:
    while count > 0:
        chunk = await asyncio.to_thread(file.read, min(CHUNK, count))
        if not chunk:
            raise ConnectionResetError("the viewer file shrank while it was sent")
        await response.write(chunk)
        count -= len(chunk)


def _not_found() -> web.Response:
    return web.Response(status=404, text="404: not found in the viewer\n", headers=_COMMON_HEADERS)
