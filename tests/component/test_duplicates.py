"""The duplicate policy of the store (TESSERA_DUPLICATE_POLICY) on real backends: the same
bytes twice always succeed; other bytes overwrite or are refused with 0111H."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.support.archive import (
    Archive,
    running_archive,
    sop_uid,
    study_uid,
    synthetic_instance,
)

from tessera_common.blobstore import ObjectStoreBlobs
from tessera_common.errors import FailureReason
from tessera_common.layout import INCOMING_PREFIX
from tessera_common.messages import InstanceRecord, LocateRequest
from tessera_store.ingest import DuplicatePolicy

OVERWRITE, REJECT = DuplicatePolicy.OVERWRITE, DuplicatePolicy.REJECT
FIRST = synthetic_instance(1, 1, 1)


@dataclass(frozen=True)
class Case:
    id: str
    policy: DuplicatePolicy
    second: bytes
    stored: bool
    kept: bytes  # what the archive holds for the SOP Instance afterwards
    filed_in: int  # the study it is filed under afterwards


CASES = [
    Case("overwrite-same-bytes", OVERWRITE, FIRST, True, FIRST, 1),
    Case("reject-same-bytes", REJECT, FIRST, True, FIRST, 1),
    Case(
        "overwrite-other-bytes",
        OVERWRITE,
        synthetic_instance(1, 1, 1, comment="corrected"),
        True,
        synthetic_instance(1, 1, 1, comment="corrected"),
        1,
    ),
    Case(
        "reject-other-bytes",
        REJECT,
        synthetic_instance(1, 1, 1, comment="corrected"),
        False,
        FIRST,
        1,
    ),
    Case(
        "overwrite-other-study",
        OVERWRITE,
        synthetic_instance(1, 1, 1, study_of=2),
        True,
        synthetic_instance(1, 1, 1, study_of=2),
        2,
    ),
    Case(
        "reject-other-study",
        REJECT,
        synthetic_instance(1, 1, 1, study_of=2),
        False,
        FIRST,
        1,
    ),
]


async def sidecar_of(archive: Archive, study: int) -> InstanceRecord | None:
    reply = await archive.index.locate(
        LocateRequest(study_uid=study_uid(study), sop_uid=sop_uid(1, 1, 1))
    )
    if not reply.instances:
        return None
    data = await archive.blobs.get(reply.instances[0].sidecar_key)
    return InstanceRecord.model_validate_json(data)


def test_duplicate_sop_instance_is_0111() -> None:
    """PS3.7 Annex C "Duplicate SOP Instance"; an additional code per PS3.18 Table I.2-2."""
    assert int(FailureReason.DUPLICATE_SOP_INSTANCE) == 0x0111


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_duplicate_policy(case: Case, blobs: ObjectStoreBlobs, tmp_path: Path) -> None:
    async with running_archive(tmp_path, blobs, duplicates=case.policy) as archive:
        first = await archive.stow(FIRST)
        assert first.stored
        before = await sidecar_of(archive, 1)
        assert before is not None

        outcome = await archive.stow(case.second)

        assert outcome.stored is case.stored, outcome.reason
        if not case.stored:
            assert outcome.failure_reason == 0x0111
            assert outcome.sop_instance_uid == sop_uid(1, 1, 1)
        record = await sidecar_of(archive, case.filed_in)
        assert record is not None
        assert record.sha256 == hashlib.sha256(case.kept).hexdigest()
        assert await archive.blobs.get(record.object_key) == case.kept
        other = 2 if case.filed_in == 1 else 1
        assert await sidecar_of(archive, other) is None
        stored_keys = {info.key async for info in archive.blobs.list("studies/")}
        assert stored_keys == {record.object_key, record.sidecar_key}, "no copy elsewhere"
        assert [info async for info in archive.blobs.list(INCOMING_PREFIX)] == []
        if case.second == FIRST:
            assert record == before, "a retry of the same bytes keeps the first record"


async def test_racing_versions_under_reject(blobs: ObjectStoreBlobs, tmp_path: Path) -> None:
    """Two versions of one SOP Instance arriving together: one is stored, one refused."""
    versions = [synthetic_instance(1, 1, 1, comment=f"version {n}") for n in range(2)]
    async with running_archive(tmp_path, blobs, duplicates=REJECT) as archive:
        outcomes = await asyncio.gather(*(archive.stow(v) for v in versions))
        assert sorted(o.stored for o in outcomes) == [False, True]
        winner = versions[[o.stored for o in outcomes].index(True)]
        record = await sidecar_of(archive, 1)
        assert record is not None
        assert record.sha256 == hashlib.sha256(winner).hexdigest()
        assert await archive.blobs.get(record.object_key) == winner
