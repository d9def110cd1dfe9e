"""Delete stored instances: the store's half of DELETE on a study, series or instance.

The gateway locates the instances (``query.locate``) and sends them here in batches of at most
``MAX_DELETE_BATCH``. For a batch, holding the per-SOP-Instance locks ingest also takes (so a
STOW and a DELETE of one instance never interleave in this process), the store

1. asks the query service to remove the index entries (``query.delete``): from then on no
   search or retrieve finds them, and an instance whose objects are gone is never located;
2. deletes each instance's sidecar, then its object, at the keys the index named and at the
   keys the layout gives for the requested UIDs (an earlier, interrupted delete may have left
   them), then its derived objects (``derived/{sha256}/``) and the metadata cache of its
   study (``cache/metadata/{study}/``, PHI that would otherwise outlive the instance);
3. asks the query service to remove the entries once more: the event stream's catch-up may
   have re-indexed an instance from its sidecar between steps 1 and 2 (it checks the sidecar
   afterwards, so one of the two sweeps always wins);
4. publishes ``events.instance.deleted`` (JetStream) for each instance removed.

Only the keys rebuilt from validated UIDs and digests are deleted, never a key the request
names. Deleting what is already gone succeeds, so a retried DELETE is harmless.
"""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import UTC, datetime

from tessera_common.blobstore import BlobStore
from tessera_common.bus import Bus
from tessera_common.errors import ErrorCode, TesseraError
from tessera_common.layout import METADATA_CACHE_PREFIX, instance_object_key, sidecar_key
from tessera_common.messages import (
    DeleteReply,
    DeleteRequest,
    IndexDeleteReply,
    IndexDeleteRequest,
    InstanceDeletedEvent,
    InstanceLocation,
    Subject,
)
from tessera_common.uid import InvalidUIDError

from .locks import InstanceLocks

log = logging.getLogger(__name__)

#: The codec's derived objects (services/codec/.../layout.py), keyed by the stored bytes.
DERIVED_PREFIX = "derived/"
#: The gateway's study and series metadata documents (services/gateway/.../metadata.py).
_SHA256 = re.compile(r"[0-9a-f]{64}")


def object_keys(instance: InstanceLocation) -> list[str]:
    """The sidecar and object keys of ``instance``, sidecar first (without it, nothing can
    index the instance again), rebuilt from its validated UIDs."""
    uids = (instance.study_uid, instance.series_uid, instance.sop_uid)
    return [sidecar_key(*uids), instance_object_key(*uids)]


class Deleter:
    def __init__(self, blobs: BlobStore, bus: Bus, locks: InstanceLocks) -> None:
        self._blobs = blobs
        self._bus = bus
        self._locks = locks

    async def delete(self, request: DeleteRequest) -> DeleteReply:
        try:
            for instance in request.instances:
                object_keys(instance)
        except InvalidUIDError as exc:
            raise TesseraError(ErrorCode.INVALID_UID, str(exc)) from exc
        requested = {instance.sop_uid: instance for instance in request.instances}
        sop_uids = sorted(requested)
        async with self._locks.hold(sop_uids):
            removed = await self._unindex(sop_uids)
            instances: list[InstanceLocation] = [*removed.instances]
            named = {instance.sop_uid for instance in instances}
            instances.extend(i for i in requested.values() if i.sop_uid not in named)
            await asyncio.gather(*(self._remove_objects(i) for i in instances))
            await self._unindex(sop_uids)
            await self._drop_caches(instances)
            deleted_at = datetime.now(UTC).isoformat()
            for instance in removed.instances:
                await self._announce(instance, deleted_at)
        log.info("deleted %d instances (%d requested)", len(removed.instances), len(sop_uids))
        return DeleteReply(deleted=[instance.sop_uid for instance in removed.instances])

    async def _unindex(self, sop_uids: list[str]) -> IndexDeleteReply:
        return await self._bus.request(
            Subject.QUERY_DELETE, IndexDeleteRequest(sop_uids=sop_uids), IndexDeleteReply
        )

    async def _remove_objects(self, instance: InstanceLocation) -> None:
        for key in object_keys(instance):
            await self._blobs.delete(key)
        if _SHA256.fullmatch(instance.sha256):
            await self._delete_prefix(f"{DERIVED_PREFIX}{instance.sha256}/")

    async def _drop_caches(self, instances: list[InstanceLocation]) -> None:
        """The metadata cache of every study touched: its documents are keyed by content, so
        the study's next ``/metadata`` request rebuilds what is still stored."""
        for study_uid in sorted({instance.study_uid for instance in instances}):
            # study_uid was validated when object_keys rebuilt this instance's keys.
            await self._delete_prefix(f"{METADATA_CACHE_PREFIX}{study_uid}/")

    async def _delete_prefix(self, prefix: str) -> None:
        keys = [info.key async for info in self._blobs.list(prefix)]
        for key in keys:
            await self._blobs.delete(key)

    async def _announce(self, instance: InstanceLocation, deleted_at: str) -> None:
        event = InstanceDeletedEvent(
            study_uid=instance.study_uid,
            series_uid=instance.series_uid,
            sop_uid=instance.sop_uid,
            sop_class_uid=instance.sop_class_uid,
            sha256=instance.sha256,
            deleted_at=deleted_at,
        )
        await self._bus.publish_event(
            Subject.EVENT_INSTANCE_DELETED,
            event,
            msg_id=f"{instance.sop_uid}:{instance.sha256}:deleted:{deleted_at}",
        )
