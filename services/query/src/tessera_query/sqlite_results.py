"""QIDO results composed from the embedded index's rows (PS3.18 §10.6.3.3).

For the UIDs on a page, read each level's stored JSON and the counts and lists a result
computes, then assemble every result with ``attributes.compose_result``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence

import orjson

from tessera_common.dicom_json import JsonDataset, element, subset, tag_key
from tessera_common.messages import QueryLevel, SearchRequest
from tessera_common.qido import (
    RELATIONAL_SERIES_ATTRIBUTES,
    RELATIONAL_STUDY_ATTRIBUTES,
    REQUIRED_RETURN_ATTRIBUTES,
)

from .attributes import (
    SERIES_INSTANCE_UID,
    STUDY_INSTANCE_UID,
    compose_result,
    instance_computed,
    series_computed,
    study_computed,
    wants_patient_counts,
    without_bulk_data,
)
from .paging import batches


def _marks(count: int) -> str:
    return ", ".join("?" * count)


def _documents(
    db: sqlite3.Connection, sql: str, uids: Sequence[str]
) -> dict[str, tuple[JsonDataset, ...]]:
    """Rows of ``sql`` (a key column, then JSON text columns, filtered by ``IN ({marks})``)
    for ``uids``, keyed by the first column, each JSON column parsed (NULL stays empty)."""
    found: dict[str, tuple[JsonDataset, ...]] = {}
    unique = list(dict.fromkeys(uids))
    for batch in batches(unique):
        for key, *texts in db.execute(sql.format(marks=_marks(len(batch))), list(batch)):
            found[key] = tuple(orjson.loads(text) if text is not None else {} for text in texts)
    return found


def _study_results(
    db: sqlite3.Connection, req: SearchRequest, keys: Sequence[tuple[str, ...]]
) -> Iterator[JsonDataset]:
    uids = [key[0] for key in keys]
    docs = _documents(db, "SELECT study_uid, json FROM studies WHERE study_uid IN ({marks})", uids)
    marks = _marks(len(uids))
    modalities: dict[str, set[str]] = {uid: set() for uid in uids}
    series_counts = dict.fromkeys(uids, 0)
    for study_uid, modality in db.execute(
        f"SELECT study_uid, modality FROM series WHERE study_uid IN ({marks})",  # noqa: S608
        uids,
    ):
        series_counts[study_uid] += 1
        if modality:
            modalities[study_uid].add(modality)
    sop_classes: dict[str, set[str]] = {uid: set() for uid in uids}
    instance_counts = dict.fromkeys(uids, 0)
    for study_uid, sop_class, count in db.execute(
        "SELECT study_uid, sop_class_uid, COUNT(*) FROM instances"  # noqa: S608 - marks only
        f" WHERE study_uid IN ({marks}) GROUP BY study_uid, sop_class_uid",
        uids,
    ):
        instance_counts[study_uid] += count
        sop_classes[study_uid].add(sop_class)
    patients = (
        _patient_counts(db, uids)
        if wants_patient_counts(req.include_fields, req.include_all)
        else None
    )
    for uid in uids:
        if uid not in docs:
            continue
        (study,) = docs[uid]
        yield compose_result(
            own=study,
            required=REQUIRED_RETURN_ATTRIBUTES[QueryLevel.STUDY],
            computed=study_computed(
                uid,
                series_count=series_counts[uid],
                instance_count=instance_counts[uid],
                modalities=modalities[uid],
                sop_classes=sop_classes[uid],
                patient_counts=patients.get(uid, (1, series_counts[uid], instance_counts[uid]))
                if patients is not None
                else None,
            ),
            include_fields=req.include_fields,
            include_all=req.include_all,
        )


def _patient_counts(db: sqlite3.Connection, uids: Sequence[str]) -> dict[str, tuple[int, int, int]]:
    """(studies, series, instances) of each study's patient, the patient being identified by
    Patient ID (studies without one count alone)."""
    marks = _marks(len(uids))
    patients = dict(
        db.execute(
            f"SELECT study_uid, patient_id FROM studies WHERE study_uid IN ({marks})"  # noqa: S608
            " AND patient_id IS NOT NULL",
            list(uids),
        ).fetchall()
    )
    ids = sorted(set(patients.values()))
    if not ids:
        return {}
    id_marks = _marks(len(ids))
    studies = dict(
        db.execute(
            "SELECT patient_id, COUNT(*) FROM studies"  # noqa: S608
            f" WHERE patient_id IN ({id_marks}) GROUP BY patient_id",
            ids,
        ).fetchall()
    )
    series = dict(
        db.execute(
            "SELECT s.patient_id, COUNT(*) FROM series AS se JOIN studies AS s"  # noqa: S608
            f" ON s.study_uid = se.study_uid WHERE s.patient_id IN ({id_marks})"
            " GROUP BY s.patient_id",
            ids,
        ).fetchall()
    )
    instances = dict(
        db.execute(
            "SELECT s.patient_id, COUNT(*) FROM instances AS i JOIN studies AS s"  # noqa: S608
            f" ON s.study_uid = i.study_uid WHERE s.patient_id IN ({id_marks})"
            " GROUP BY s.patient_id",
            ids,
        ).fetchall()
    )
    return {
        uid: (studies.get(pid, 0), series.get(pid, 0), instances.get(pid, 0))
        for uid, pid in patients.items()
    }


def _series_results(
    db: sqlite3.Connection, req: SearchRequest, keys: Sequence[tuple[str, ...]]
) -> Iterator[JsonDataset]:
    series_uids = [key[1] for key in keys]
    docs = _documents(
        db, "SELECT series_uid, json FROM series WHERE series_uid IN ({marks})", series_uids
    )
    studies: dict[str, tuple[JsonDataset, ...]] = {}
    if req.study_uid is None or req.include_fields:
        studies = _documents(
            db,
            "SELECT study_uid, json FROM studies WHERE study_uid IN ({marks})",
            [key[0] for key in keys],
        )
    counts = dict.fromkeys(series_uids, 0)
    counts.update(
        db.execute(
            "SELECT series_uid, COUNT(*) FROM instances"  # noqa: S608
            f" WHERE series_uid IN ({_marks(len(series_uids))}) GROUP BY series_uid",
            series_uids,
        ).fetchall()
    )
    for study_uid, series_uid, *_ in keys:
        if series_uid not in docs:
            continue
        (series,) = docs[series_uid]
        study = studies.get(study_uid, ({},))[0]
        relational = {tag_key(STUDY_INSTANCE_UID): element("UI", study_uid)}
        if req.study_uid is None:
            relational.update(subset(study, RELATIONAL_STUDY_ATTRIBUTES))
        yield compose_result(
            own=series,
            required=REQUIRED_RETURN_ATTRIBUTES[QueryLevel.SERIES],
            computed=series_computed(study_uid, series_uid, instance_count=counts[series_uid]),
            relational=relational,
            include_fields=req.include_fields,
            include_all=req.include_all,
            sources=(study,),
        )


def _instance_results(
    db: sqlite3.Connection, req: SearchRequest, keys: Sequence[tuple[str, ...]]
) -> Iterator[JsonDataset]:
    sop_uids = [key[2] for key in keys]
    full = req.include_all or bool(req.include_fields)
    column = "metadata" if full else "NULL"
    docs = _documents(
        db,
        f"SELECT sop_uid, json, {column} FROM instances WHERE sop_uid IN ({{marks}})",  # noqa: S608
        sop_uids,
    )
    series_docs: dict[str, tuple[JsonDataset, ...]] = {}
    if req.series_uid is None:
        series_docs = _documents(
            db,
            "SELECT series_uid, json FROM series WHERE series_uid IN ({marks})",
            [key[1] for key in keys],
        )
    study_docs: dict[str, tuple[JsonDataset, ...]] = {}
    if req.study_uid is None:
        study_docs = _documents(
            db,
            "SELECT study_uid, json FROM studies WHERE study_uid IN ({marks})",
            [key[0] for key in keys],
        )
    for study_uid, series_uid, sop_uid, *_ in keys:
        if sop_uid not in docs:
            continue
        instance, metadata = docs[sop_uid]
        relational: JsonDataset = {}
        if req.study_uid is None:
            relational.update(
                subset(study_docs.get(study_uid, ({},))[0], RELATIONAL_STUDY_ATTRIBUTES)
            )
        if req.series_uid is None:
            relational.update(
                subset(series_docs.get(series_uid, ({},))[0], RELATIONAL_SERIES_ATTRIBUTES)
            )
        relational[tag_key(STUDY_INSTANCE_UID)] = element("UI", study_uid)
        relational[tag_key(SERIES_INSTANCE_UID)] = element("UI", series_uid)
        clean = without_bulk_data(metadata) if full else {}
        yield compose_result(
            own=clean if req.include_all else instance,
            required=REQUIRED_RETURN_ATTRIBUTES[QueryLevel.INSTANCE],
            computed=instance_computed(study_uid, series_uid, sop_uid),
            relational=relational,
            include_fields=req.include_fields,
            include_all=req.include_all,
            sources=(clean,),
        )


_Composer = Callable[
    [sqlite3.Connection, SearchRequest, Sequence[tuple[str, ...]]], Iterator[JsonDataset]
]

COMPOSERS: dict[QueryLevel, _Composer] = {
    QueryLevel.STUDY: _study_results,
    QueryLevel.SERIES: _series_results,
    QueryLevel.INSTANCE: _instance_results,
}
