"""The OHIF viewer's static files, made servable below ``/viewer``: pure rules, no I/O.

``@ohif/app`` ships a production build (``dist/``) made for the root of a web server: its
``index.html`` names ``/app.bundle….js``, its CSS ``url(/….woff2)`` and every webpack runtime
(the app's and each web worker's) has ``__webpack_require__.p = "/"`` as the base of the chunks it
loads. Rather than rebuild OHIF with another ``PUBLIC_URL``, the gateway *relocates* those few
spots while it streams a file: :func:`splices` says which byte ranges to replace, and the
response is the file with them replaced (``Content-Length`` is known in advance, memory stays
bounded). Everything else is served as stored.

Also here: the ``app-config.js`` Tessera generates (OHIF's DICOMweb data source pointed at this
server), safe resolution of a request path inside the viewer root, media types (``.wasm`` must
be ``application/wasm`` for ``WebAssembly.instantiateStreaming``) and caching rules.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

VIEWER_PATH = "/viewer"
"""Where the gateway mounts the viewer; OHIF's own routes (``/viewer``, ``/microscopy``, …)
follow it, e.g. ``/viewer/viewer?StudyInstanceUIDs=…``."""

OHIF_VERSION = "3.13.2"
"""The ``@ohif/app`` release ``scripts/install-viewer.sh`` installs and the tests run."""

MEDIA_TYPES: dict[str, str] = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",  # RFC 9239
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".wasm": "application/wasm",  # needed by WebAssembly.instantiateStreaming
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".gif": "image/gif",
    ".ico": "image/vnd.microsoft.icon",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
    ".xml": "application/xml",
    ".txt": "text/plain; charset=utf-8",
    ".onnx": "application/octet-stream",
}
FALLBACK_MEDIA_TYPE = "application/octet-stream"

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
"""``no-cache`` means "revalidate first" (RFC 9111 §5.2.2.4): with the ETag, a 304."""
_CONTENT_HASH = re.compile(r"(?:^|[.])[0-9a-f]{16,}\.[A-Za-z0-9]+$")
"""webpack content hashes: ``1602.bundle.94f12cceab7c2762.js``, ``0ddf166f7a343eda.wasm``."""


def media_type(path: PurePosixPath | Path) -> str:
    return MEDIA_TYPES.get(path.suffix.lower(), FALLBACK_MEDIA_TYPE)


def cache_control(path: PurePosixPath | Path) -> str:
    """Content-hashed files never change under their name; anything else is revalidated."""
    return IMMUTABLE if _CONTENT_HASH.search(path.name) else REVALIDATE


# --- request paths -------------------------------------------------------------------------------


class UnsafePathError(ValueError):
    """A request path that could leave the viewer root or name a hidden file."""


def relative_path(tail: str) -> PurePosixPath:
    """The request path below ``/viewer/`` as a relative path, or ``UnsafePathError``.

    Refused: ``..`` and ``.`` segments, empty segments (``//``), backslashes, NUL, and hidden
    names (``.git``, ``.env``). ``""`` is the root (``index.html``).
    """
    if not tail:
        return PurePosixPath()
    if "\\" in tail or "\x00" in tail:
        raise UnsafePathError("backslash or NUL in the path")
    segments = tail.split("/")
    if segments[-1] == "":
        segments.pop()  # a trailing slash names the same thing
    for segment in segments:
        if segment in ("", ".", "..") or segment.startswith("."):
            raise UnsafePathError(f"path segment {segment!r} is not allowed")
    return PurePosixPath(*segments)


def resolve_inside(root: Path, relative: PurePosixPath) -> Path | None:
    """The regular file ``root/relative``, or None when it is missing, not a file, or resolves
    (through a symbolic link) outside ``root``. Touches the file system: call it off the loop."""
    base = root.resolve()
    candidate = (base / relative).resolve()
    if not candidate.is_relative_to(base) or not candidate.is_file():
        return None
    return candidate


def is_client_route(relative: PurePosixPath) -> bool:
    """A path OHIF's router handles (``viewer``, ``microscopy/x``): no dot in its last segment.

    Only these fall back to ``index.html``: a missing ``x.js`` stays a 404 rather than HTML a
    browser would try to run.
    """
    return "." not in relative.name


# --- relocation ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Splice:
    """Replace ``length`` bytes at ``offset`` of a file by ``replacement``."""

    offset: int
    length: int
    replacement: bytes


JS_RELOCATIONS: tuple[tuple[bytes, bytes], ...] = (
    # the webpack runtime's publicPath, in the app bundle and in each worker's
    (b'__webpack_require__.p = "/";', b'__webpack_require__.p = "{prefix}/";'),
    # OHIF's microscopy mode imports its slide viewer library by a root-relative URL
    (b"'/dicom-microscopy-viewer/", b"'{prefix}/dicom-microscopy-viewer/"),
)
"""Root-relative references in OHIF's JavaScript: (as built, relocated below ``{prefix}``)."""
MAX_REWRITTEN_TEXT = 4 * 1024**2
"""HTML and CSS larger than this are served unchanged (OHIF's are a few kB)."""
_HTML_ROOTED = re.compile(rb"""((?:src|href|content)=["'])/(?![/])""")
_HTML_PUBLIC_URL = re.compile(rb"""(window\.PUBLIC_URL\s*=\s*["'])/(["'])""")
_CSS_ROOTED = re.compile(rb"""(url\(\s*["']?)/(?![/])""")


def js_splices(found: Iterable[tuple[int, int]], prefix: str) -> tuple[Splice, ...]:
    """Splices for ``(offset, index into JS_RELOCATIONS)`` pairs found in a script."""
    edits: dict[int, Splice] = {}
    for offset, which in found:
        marker, template = JS_RELOCATIONS[which]
        replacement = template.replace(b"{prefix}", prefix.encode())
        edits.setdefault(offset, Splice(offset, len(marker), replacement))
    return tuple(edits[offset] for offset in sorted(edits))


def scan_js(chunks: Iterable[bytes]) -> list[tuple[int, int]]:
    """``(offset, index into JS_RELOCATIONS)`` of every marker in a script read as ``chunks``
    (a marker may straddle two chunks)."""
    overlap = max(len(marker) for marker, _ in JS_RELOCATIONS) - 1
    found: set[tuple[int, int]] = set()
    start, carry = 0, b""
    for chunk in chunks:
        window = carry + chunk
        for which, (marker, _) in enumerate(JS_RELOCATIONS):
            found.update((offset, which) for offset in find_all(window, marker, start))
        carry = window[-overlap:] if len(window) > overlap else window
        start += len(window) - len(carry)
    return sorted(found)


def find_all(data: bytes, marker: bytes, start: int = 0) -> list[int]:
    """Offsets (plus ``start``) of every ``marker`` in ``data``."""
    found: list[int] = []
    at = data.find(marker)
    while at >= 0:
        found.append(start + at)
        at = data.find(marker, at + len(marker))
    return found


def text_splices(suffix: str, data: bytes, prefix: str) -> tuple[Splice, ...]:
    """Root-relative references in an HTML or CSS file, moved below ``prefix``."""
    patterns: tuple[re.Pattern[bytes], ...]
    if suffix == ".html":
        patterns = (_HTML_PUBLIC_URL, _HTML_ROOTED)
    elif suffix == ".css":
        patterns = (_CSS_ROOTED,)
    else:
        return ()
    edits: dict[int, Splice] = {}
    for pattern in patterns:
        for match in pattern.finditer(data):
            slash = match.end(1)
            edits.setdefault(slash, Splice(slash, 1, prefix.encode() + b"/"))
    return tuple(edits[offset] for offset in sorted(edits))


def spliced_length(size: int, edits: Iterable[Splice]) -> int:
    return size + sum(len(edit.replacement) - edit.length for edit in edits)


def apply_splices(data: bytes, edits: Iterable[Splice]) -> bytes:
    """``data`` with ``edits`` applied (for small files and tests; large ones are streamed)."""
    out = bytearray()
    position = 0
    for edit in edits:
        out += data[position : edit.offset] + edit.replacement
        position = edit.offset + edit.length
    out += data[position:]
    return bytes(out)


# --- app-config.js -------------------------------------------------------------------------------


def data_source(dicomweb_root: str) -> dict[str, Any]:
    """OHIF's DICOMweb data source for a Tessera whose DICOMweb root is ``dicomweb_root``.

    What Tessera supports (docs/CONFORMANCE.md) switched on: ``includefield`` and fuzzy /
    wildcard matching in QIDO-RS, WADO-RS frames for images, the ``/thumbnail`` resources for
    thumbnails (fetched, so a bearer token goes along), lazy study loading and BulkDataURIs.
    """
    return {
        "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
        "sourceName": "tessera",
        "configuration": {
            "friendlyName": "Tessera",
            "name": "tessera",
            "qidoRoot": dicomweb_root,
            "wadoRoot": dicomweb_root,
            "wadoUriRoot": dicomweb_root + "/wado",
            "qidoSupportsIncludeField": True,
            "supportsFuzzyMatching": True,
            "supportsWildcard": True,
            "supportsReject": False,
            "imageRendering": "wadors",
            "thumbnailRendering": "thumbnail",
            "thumbnailRequestStrategy": "fetch",
            "enableStudyLazyLoad": True,
            "staticWado": False,
            "singlepart": "bulkdata,video,pdf",
            "omitQuotationForMultipartRequest": True,
            "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
            "dicomUploadEnabled": False,
        },
    }


def app_config(dicomweb_root: str, prefix: str) -> dict[str, Any]:
    """OHIF's ``window.config``: only Tessera as data source, routed below ``prefix``."""
    return {
        "name": "tessera",
        "routerBasename": prefix,
        "extensions": [],
        "modes": [],
        "customizationService": {},
        "showStudyList": True,
        "maxNumberOfWebWorkers": 3,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": True,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "groupEnabledModesFirst": True,
        "maxNumRequests": {"interaction": 100, "thumbnail": 10, "prefetch": 25},
        "showErrorDetails": "always",
        "defaultDataSourceName": "tessera",
        "dataSources": [data_source(dicomweb_root)],
    }


def app_config_js(dicomweb_root: str, prefix: str) -> bytes:
    """The ``app-config.js`` script: ``window.config`` as a JSON literal (valid JavaScript,
    every string escaped by the JSON encoder)."""
    body = json.dumps(app_config(dicomweb_root, prefix), indent=2)
    return (
        b"/* Generated by Tessera (tessera_gateway.viewer_assets): OHIF's data source is this "
        b"server. */\nwindow.config = " + body.encode() + b";\n"
    )


def viewer_prefix(public_url: str | None, base_path: str) -> str:
    """The viewer's public path: ``/viewer``, or below the proxy prefix ``public_url`` has
    (``https://h/pacs/dicom-web`` with base ``/dicom-web`` -> ``/pacs/viewer``)."""
    if not public_url:
        return VIEWER_PATH
    path = urlsplit(public_url).path.rstrip("/")
    base = base_path.rstrip("/")
    if base and path.endswith(base):
        return path[: -len(base)].rstrip("/") + VIEWER_PATH
    return VIEWER_PATH
