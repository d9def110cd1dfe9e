"""Typed application keys and the pieces every transaction module shares."""

from __future__ import annotations

from aiohttp import web

from tessera_common.blobstore import BlobStore
from tessera_common.bus import Bus
from tessera_common.errors import ErrorCode, TesseraError
from tessera_common.settings import Settings
from tessera_common.uid import InvalidUIDError, validate_uid

SETTINGS = web.AppKey("settings", Settings)
BUS = web.AppKey("bus", Bus)
BLOBS = web.AppKey("blobs", BlobStore)

_PATH_UIDS = {
    "study": "Study Instance UID",
    "series": "Series Instance UID",
    "instance": "SOP Instance UID",
}


def path_uid(request: web.Request, name: str) -> str:
    """A UID from the URL path, validated (PS3.18 §8.2: path segments are UIDs)."""
    value = request.match_info[name]
    try:
        return validate_uid(value, what=_PATH_UIDS.get(name, "UID"))
    except InvalidUIDError as exc:
        raise TesseraError(ErrorCode.INVALID_UID, str(exc)) from exc


def optional_path_uid(request: web.Request, name: str) -> str | None:
    return path_uid(request, name) if name in request.match_info else None


def service_root(request: web.Request) -> str:
    """The absolute URL of the DICOMweb root, used in Retrieve URLs and BulkDataURIs."""
    settings = request.app[SETTINGS]
    if settings.public_url:
        return settings.public_url.rstrip("/")
    return f"{request.scheme}://{request.host}{settings.base_path}".rstrip("/")
