"""Collect what interrupted STOWs leave in object storage (ARCHITECTURE invariant 2).

* **Uploads** under ``incoming/`` older than the grace period (``TESSERA_ORPHAN_GRACE_SECONDS``)
  are deleted: the gateway streams each part there and the store renames or deletes it within
  the request, so an old one belongs to a request that died. The grace period must exceed the
  longest STOW request (an upload waits there until its whole request body has arrived).
* **Half instances** — an object without its sidecar (a store killed between renaming the
  upload and writing the sidecar, so never acknowledged) or a sidecar without its object — are
  reported once older than the grace period, and deleted only when asked (``remove``): both
  parts are looked up again right before.

An object is judged by the modification time the store reports; one whose age is unknown is
kept. The store service runs this on a timer (``collecting_orphans``); ``tessera gc`` runs it
once. Several store replicas may run it at once: deleting twice is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from tessera_common.blobstore import BlobInfo, BlobStore, check_key
from tessera_common.layout import INCOMING_PREFIX
from tessera_common.settings import Settings

from .catalog import StoredInstance, stored_instances
from .maintenance import Problem, Progress, Tally

log = logging.getLogger(__name__)

UPLOAD_DELETED = "upload-deleted"
UPLOAD_KEPT = "upload-kept"
UNPAIRED = "unpaired"
UNPAIRED_YOUNG = "unpaired-young"
REMOVED = "removed"
#: Seconds after the store starts before its first collection.
FIRST_RUN_SECONDS = 60.0

InstancesMode = Literal["ignore", "report", "remove"]


@dataclass(frozen=True, slots=True)
class OrphanReport:
    uploads_deleted: int
    uploads_kept: int
    unpaired: int
    """Half instances older than the grace period (removed ones included)."""
    unpaired_young: int
    removed: int
    problems: tuple[Problem, ...]


async def collect_orphans(
    blobs: BlobStore,
    *,
    grace: timedelta,
    instances: InstancesMode = "report",
    now: datetime | None = None,
    progress: Progress | None = None,
) -> OrphanReport:
    """Delete uploads older than ``grace``; report (``remove``: delete) half instances older
    than ``grace``. ``now`` is the reference time (the current time when None)."""
    cutoff = (now or datetime.now(UTC)) - grace
    tally = Tally(progress)
    async for info in blobs.list(INCOMING_PREFIX):
        if _older(info, cutoff) and _deletable(info.key):
            await blobs.delete(info.key)
            tally.count(UPLOAD_DELETED)
        else:
            tally.count(UPLOAD_KEPT)
    if instances != "ignore":
        async for found in stored_instances(blobs):
            if not found.complete:
                await _half(blobs, found, cutoff, instances == "remove", tally)
    counts = tally.counts
    return OrphanReport(
        uploads_deleted=counts[UPLOAD_DELETED],
        uploads_kept=counts[UPLOAD_KEPT],
        unpaired=counts[UNPAIRED] + counts[REMOVED],
        unpaired_young=counts[UNPAIRED_YOUNG],
        removed=counts[REMOVED],
        problems=tuple(tally.problems),
    )


def _older(info: BlobInfo, cutoff: datetime) -> bool:
    return info.last_modified is not None and info.last_modified < cutoff


def _deletable(key: str) -> bool:
    try:
        check_key(key)
    except ValueError:
        return False
    return True


async def _half(
    blobs: BlobStore, found: StoredInstance, cutoff: datetime, remove: bool, tally: Tally
) -> None:
    present = found.object or found.sidecar
    assert present is not None
    if not _older(present, cutoff):
        tally.count(UNPAIRED_YOUNG)
        return
    missing = "sidecar" if found.object is not None else "object"
    if remove and await _still_half(blobs, found):
        await blobs.delete(present.key)
        tally.problem(REMOVED, present.key, f"{missing}-missing", f"no {missing}: deleted")
        return
    tally.problem(UNPAIRED, present.key, f"{missing}-missing", f"no {missing}")


async def _still_half(blobs: BlobStore, found: StoredInstance) -> bool:
    has_object = await blobs.head(found.object_key) is not None
    has_sidecar = await blobs.head(found.sidecar_key) is not None
    return has_object != has_sidecar


async def collect_orphans_forever(settings: Settings, blobs: BlobStore) -> None:
    """Collect orphans every ``TESSERA_ORPHAN_INTERVAL_SECONDS`` (0: never), the first time a
    minute after start; a failed round is logged and the next one tried."""
    interval = settings.orphan_interval_seconds
    if interval <= 0:
        return
    grace = timedelta(seconds=settings.orphan_grace_seconds)
    await asyncio.sleep(min(interval, FIRST_RUN_SECONDS))
    while True:
        try:
            report = await collect_orphans(blobs, grace=grace, instances=settings.orphan_instances)
        except Exception:
            log.exception("orphan collection failed; trying again in %g s", interval)
        else:
            _log(report)
        await asyncio.sleep(interval)


#: Half instances named in the log after each round (the rest are counted).
LOGGED_PROBLEMS = 20


def _log(report: OrphanReport) -> None:
    if report.uploads_deleted:
        log.info("orphan collection deleted %d abandoned uploads", report.uploads_deleted)
    if report.unpaired:
        log.warning(
            "%d half instances (object or sidecar alone) older than the grace period, %d "
            "deleted; 'tessera gc --remove' deletes them",
            report.unpaired,
            report.removed,
        )
    for problem in report.problems[:LOGGED_PROBLEMS]:
        log.warning("orphaned %s: %s", problem.key, problem.detail)


@contextlib.asynccontextmanager
async def collecting_orphans(settings: Settings, blobs: BlobStore) -> AsyncIterator[None]:
    """Run ``collect_orphans_forever`` for the duration of the ``async with`` block."""
    task = asyncio.create_task(collect_orphans_forever(settings, blobs), name="orphans")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
