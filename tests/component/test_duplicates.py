"""The duplicate policy of the store (TESSERA_DUPLICATE_POLICY) on real backends: the same
bytes twice always succeed; other bytes overwrite or are refused with 0111H."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
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
from tessera_common.messages import (
    IngestBatchRequest,
    IngestRequest,
    InstanceRecord,
    LocateRequest,
)
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


# --- one STOW request's parts ingested together (``store.ingest_batch``) -----------------------


@pytest.mark.parametrize("policy", [OVERWRITE, REJECT], ids=["overwrite", "reject"])
async def test_batch_outcomes_are_per_part(
    policy: DuplicatePolicy, blobs: ObjectStoreBlobs, tmp_path: Path
) -> None:
    """One batch: new instances, a SOP Instance sent twice with other bytes (ingested in the
    order sent), a file that is not DICOM and an instance filed before under another study.
    Each part gets its own outcome; the bad ones fail alone."""
    corrected = synthetic_instance(1, 1, 1, comment="corrected")
    moved = synthetic_instance(2, 1, 1, study_of=3)
    parts = [
        FIRST,
        synthetic_instance(1, 1, 2),
        corrected,
        b"not a DICOM file" * 20,
        moved,
        synthetic_instance(1, 1, 3),
    ]
    async with running_archive(tmp_path, blobs, duplicates=policy) as archive:
        assert (await archive.stow(synthetic_instance(2, 1, 1))).stored
        outcomes = await archive.stow_batch(parts)

        stored = [o.stored for o in outcomes]
        duplicate = int(FailureReason.DUPLICATE_SOP_INSTANCE)
        if policy is OVERWRITE:
            assert stored == [True, True, True, False, True, True]
        else:
            assert stored == [True, True, False, False, False, True]
            assert outcomes[2].failure_reason == duplicate
            assert outcomes[4].failure_reason == duplicate
        assert outcomes[3].failure_reason == int(FailureReason.CANNOT_UNDERSTAND)
        assert outcomes[1].sop_instance_uid == sop_uid(1, 1, 2)

        record = await sidecar_of(archive, 1)
        assert record is not None
        kept = corrected if policy is OVERWRITE else FIRST
        assert record.sha256 == hashlib.sha256(kept).hexdigest()
        assert await archive.blobs.get(record.object_key) == kept
        filed = await archive.index.locate(
            LocateRequest(study_uid=study_uid(3 if policy is OVERWRITE else 2))
        )
        assert [i.sop_uid for i in filed.instances] == [sop_uid(2, 1, 1)]
        assert [info async for info in archive.blobs.list(INCOMING_PREFIX)] == []


async def test_batch_repeated_same_bytes_is_idempotent(
    blobs: ObjectStoreBlobs, tmp_path: Path
) -> None:
    async with running_archive(tmp_path, blobs, duplicates=REJECT) as archive:
        outcomes = await archive.stow_batch([FIRST, FIRST, synthetic_instance(1, 1, 2), FIRST])
        assert [o.stored for o in outcomes] == [True, True, True, True]
        located = await archive.index.locate(LocateRequest(study_uid=study_uid(1)))
        assert sorted(i.sop_uid for i in located.instances) == [sop_uid(1, 1, 1), sop_uid(1, 1, 2)]


async def test_batch_part_outside_incoming_fails_alone(
    blobs: ObjectStoreBlobs, tmp_path: Path
) -> None:
    async with running_archive(tmp_path, blobs) as archive:
        key = f"{INCOMING_PREFIX}{uuid.uuid4().hex}"
        await archive.blobs.put(key, FIRST)
        digest = hashlib.sha256(FIRST).hexdigest()
        parts = [
            IngestRequest(upload_key="studies/elsewhere", size=len(FIRST), sha256=digest),
            IngestRequest(upload_key=key, size=len(FIRST), sha256=digest),
        ]
        reply = await archive.ingestor.ingest_batch(IngestBatchRequest(parts=parts))
        assert [o.stored for o in reply.outcomes] == [False, True]
        assert reply.outcomes[0].failure_reason == int(FailureReason.PROCESSING_FAILURE)
