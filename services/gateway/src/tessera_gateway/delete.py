"""DELETE of a study, series or instance (docs/CONFORMANCE.md, "DELETE").

DICOMweb itself defines no deletion; this follows the servers that offer one (Microsoft's
DICOM service, dcm4chee-arc): ``DELETE {root}/studies/{study}[/series/{series}
[/instances/{instance}]]`` answers 204 No Content once everything it named is gone, 404 when
nothing matches and 400 for an invalid UID (PS3.18 §8.2). The ``delete`` scope guards it
(``access.py``).

The gateway locates the instances (``query.locate``) a batch at a time and has the store
delete each batch (``store.delete``): the store is the sole writer of instance objects. A batch
deleted no longer matches, so the next batch is always the first page again; the deletion is
complete when nothing is left (instances a concurrent STOW adds meanwhile are deleted too).
"""

from __future__ import annotations

from aiohttp import web

from tessera_common.errors import ErrorCode, TesseraError
from tessera_common.messages import (
    MAX_DELETE_BATCH,
    DeleteReply,
    DeleteRequest,
    InstanceLocation,
    LocateReply,
    Subject,
)

from .context import BUS
from .instances import locate_request
from .locations import LOCATIONS


async def delete_resource(request: web.Request) -> web.Response:
    locate = locate_request(request).model_copy(update={"limit": MAX_DELETE_BATCH})
    bus = request.app[BUS]
    attempted: set[str] = set()
    while True:
        try:
            located = await bus.request(Subject.QUERY_LOCATE, locate, LocateReply)
        except TesseraError as exc:
            if exc.code is ErrorCode.NOT_FOUND and attempted:
                return web.Response(status=204)
            raise
        batch = [i for i in located.instances if i.sop_uid not in attempted]
        if not batch:
            # The store was asked for every one of them and they are still indexed.
            raise TesseraError(ErrorCode.INTERNAL, "the located instances could not be deleted")
        attempted.update(i.sop_uid for i in batch)
        instances = [InstanceLocation.model_validate(i.model_dump()) for i in batch]
        try:
            await bus.request(Subject.STORE_DELETE, DeleteRequest(instances=instances), DeleteReply)
        finally:
            request.app[LOCATIONS].forget(i.sop_uid for i in batch)
