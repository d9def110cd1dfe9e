"""What object storage holds: every stored instance as its object and its sidecar.

The maintenance tools (``reindex``, ``verify``, ``orphans``) walk the ``studies/`` tree through
this one streamed listing. Keys are parsed back into validated UIDs (``layout``); anything else
under ``studies/`` is not an instance and is left alone.

A listing is read once, never held: pairs are matched within one ``instances/`` directory at a
time, since both backends list a directory's keys together (S3 lists in key order; the local
store walks one directory at a time). An object whose partner was not listed beside it is
looked up again before it is reported alone, so a pair completed during the listing, or an
unusual listing order, is not mistaken for an orphan.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

from tessera_common.blobstore import BlobInfo, BlobStore
from tessera_common.layout import STUDIES_PREFIX, instance_object_key, sidecar_key
from tessera_common.uid import is_valid_uid

_INSTANCE_KEY = re.compile(
    r"studies/(?P<study>[0-9.]+)/series/(?P<series>[0-9.]+)/instances/(?P<sop>[0-9.]+)"
    r"\.(?P<kind>dcm|json)"
)
OBJECT = "dcm"
SIDECAR = "json"


@dataclass(frozen=True, slots=True)
class InstanceKey:
    """The UIDs an instance is filed under and which of its two objects a key names."""

    study_uid: str
    series_uid: str
    sop_uid: str
    kind: str


def parse_instance_key(key: str) -> InstanceKey | None:
    """The instance a ``studies/…/{sop}.dcm|json`` key belongs to; None for any other key."""
    match = _INSTANCE_KEY.fullmatch(key)
    if match is None:
        return None
    uids = (match["study"], match["series"], match["sop"])
    if not all(is_valid_uid(uid) for uid in uids):
        return None
    return InstanceKey(*uids, kind=match["kind"])


@dataclass(frozen=True, slots=True)
class StoredInstance:
    """One instance in object storage: its PS3.10 object and its sidecar, either of which may
    be missing (an interrupted STOW, a lost object)."""

    study_uid: str
    series_uid: str
    sop_uid: str
    object: BlobInfo | None
    sidecar: BlobInfo | None

    @property
    def object_key(self) -> str:
        return instance_object_key(self.study_uid, self.series_uid, self.sop_uid)

    @property
    def sidecar_key(self) -> str:
        return sidecar_key(self.study_uid, self.series_uid, self.sop_uid)

    @property
    def complete(self) -> bool:
        return self.object is not None and self.sidecar is not None


async def stored_instances(blobs: BlobStore) -> AsyncIterator[StoredInstance]:
    """Every instance under ``studies/``, streamed in listing order."""
    directory: tuple[str, str] | None = None
    pending: dict[str, dict[str, BlobInfo]] = {}
    async for info in blobs.list(STUDIES_PREFIX):
        parsed = parse_instance_key(info.key)
        if parsed is None:
            continue
        if (parsed.study_uid, parsed.series_uid) != directory:
            if directory is not None:
                async for alone in _unpaired(blobs, directory, pending):
                    yield alone
            directory = (parsed.study_uid, parsed.series_uid)
            pending = {}
        parts = pending.setdefault(parsed.sop_uid, {})
        parts[parsed.kind] = info
        if OBJECT in parts and SIDECAR in parts:
            del pending[parsed.sop_uid]
            yield StoredInstance(*directory, parsed.sop_uid, parts[OBJECT], parts[SIDECAR])
    if directory is not None:
        async for alone in _unpaired(blobs, directory, pending):
            yield alone


async def _unpaired(
    blobs: BlobStore, directory: tuple[str, str], pending: dict[str, dict[str, BlobInfo]]
) -> AsyncIterator[StoredInstance]:
    """The instances of one directory listed with one part only, each part looked up again."""
    study_uid, series_uid = directory
    for sop_uid, parts in pending.items():
        found = StoredInstance(
            study_uid, series_uid, sop_uid, parts.get(OBJECT), parts.get(SIDECAR)
        )
        if found.object is None:
            found = StoredInstance(
                study_uid, series_uid, sop_uid, await blobs.head(found.object_key), found.sidecar
            )
        else:
            found = StoredInstance(
                study_uid, series_uid, sop_uid, found.object, await blobs.head(found.sidecar_key)
            )
        yield found
