"""The embedded index: SQLite behind the ``Index`` port.

One connection in WAL mode, shared by the worker threads the service runs it on and guarded by
a lock (SQLite connections are not safe for concurrent use). Writes are one transaction per
instance, so an instance is visible with its study and series rows or not at all (ARCHITECTURE
invariant 2). Searches run the compiled key query and read the page's stored JSON inside one
read transaction, so a page is a consistent snapshot.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import orjson

from tessera_common.dicom_json import JsonDataset, element, subset, tag_key
from tessera_common.messages import (
    PAGE_BYTES,
    IndexReply,
    InstanceRecord,
    LocatedInstance,
    LocateReply,
    LocateRequest,
    MetadataReply,
    MetadataRequest,
    QueryLevel,
    SearchReply,
    SearchRequest,
)
from tessera_common.qido import (
    RELATIONAL_SERIES_ATTRIBUTES,
    RELATIONAL_STUDY_ATTRIBUTES,
    REQUIRED_RETURN_ATTRIBUTES,
)
from tessera_query.attributes import (
    SERIES_INSTANCE_UID,
    STUDY_INSTANCE_UID,
    compose_result,
    instance_computed,
    series_computed,
    split_levels,
    study_computed,
    without_bulk_data,
)
from tessera_query.sql import LOCATE_COLUMNS, SCHEMA, compile_locate, compile_search

#: UIDs read per batch when fetching a page's documents; far below SQLite's parameter limit.
_BATCH = 200
#: The most instances one locate page may list.
MAX_LOCATE_LIMIT = 10000

_T = TypeVar("_T")


def _dumps(dataset: Mapping[str, Any]) -> str:
    return orjson.dumps(dataset).decode()


def _marks(count: int) -> str:
    return ", ".join("?" * count)


def _batches(items: Sequence[_T], size: int = _BATCH) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class _PageBudget:
    """Counts serialized bytes so a page stays under ``PAGE_BYTES``; the first item always
    fits, so every page makes progress."""

    def __init__(self, limit: int = PAGE_BYTES) -> None:
        self._limit = limit
        self._used = 0
        self._count = 0

    def admit(self, size: int) -> bool:
        if self._count and self._used + size > self._limit:
            return False
        self._used += size
        self._count += 1
        return True


class SqliteIndex:
    """The ``Index`` port on a SQLite file (created with its schema when missing)."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA busy_timeout=5000")
            with self._transaction():
                for statement in SCHEMA:
                    self._conn.execute(statement)

    def __enter__(self) -> SqliteIndex:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def _transaction(self, mode: str = "IMMEDIATE") -> Iterator[sqlite3.Connection]:
        """One transaction; the caller holds the lock."""
        self._conn.execute(f"BEGIN {mode}")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # -- writing ---------------------------------------------------------------------------

    def upsert(self, record: InstanceRecord, metadata: Mapping[str, Any]) -> IndexReply:
        """Index one instance (idempotent, keyed by SOP Instance UID).

        The study and series rows take the attributes of the latest instance indexed. An
        instance re-stored under another series or study is moved, and the series and studies
        it leaves empty are removed; a series re-stored under another study takes all its
        instances along, since a series belongs to exactly one study (PS3.3 §A.1.2).
        The reply names the objects of the instance replaced, so the store can delete them
        when their keys differ from the new ones.
        """
        split = split_levels(
            metadata,
            study_uid=record.study_uid,
            series_uid=record.series_uid,
            sop_uid=record.sop_uid,
        )
        study, series = split.study_keys, split.series_keys
        frames = record.frames.model_dump_json() if record.frames is not None else None
        with self._lock, self._transaction() as db:
            previous = db.execute(
                "SELECT series_uid, study_uid, object_key, sidecar_key FROM instances"
                " WHERE sop_uid = ?",
                (record.sop_uid,),
            ).fetchone()
            series_row = db.execute(
                "SELECT study_uid FROM series WHERE series_uid = ?", (record.series_uid,)
            ).fetchone()
            db.execute(
                "INSERT INTO studies (study_uid, patient_id, patient_name, accession_number,"
                " study_date, study_id, json) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (study_uid) DO UPDATE SET patient_id = excluded.patient_id,"
                " patient_name = excluded.patient_name,"
                " accession_number = excluded.accession_number,"
                " study_date = excluded.study_date, study_id = excluded.study_id,"
                " json = excluded.json",
                (
                    record.study_uid,
                    study.patient_id,
                    study.patient_name,
                    study.accession_number,
                    study.study_date,
                    study.study_id,
                    _dumps(split.study),
                ),
            )
            db.execute(
                "INSERT INTO series (series_uid, study_uid, modality, series_number, json)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (series_uid) DO UPDATE SET"
                " study_uid = excluded.study_uid, modality = excluded.modality,"
                " series_number = excluded.series_number, json = excluded.json",
                (
                    record.series_uid,
                    record.study_uid,
                    series.modality,
                    series.series_number,
                    _dumps(split.series),
                ),
            )
            if series_row is not None and series_row[0] != record.study_uid:
                db.execute(
                    "UPDATE instances SET study_uid = ? WHERE series_uid = ?",
                    (record.study_uid, record.series_uid),
                )
                self._drop_empty_study(db, series_row[0])
            db.execute(
                "INSERT INTO instances (sop_uid, series_uid, study_uid, sop_class_uid,"
                " instance_number, transfer_syntax_uid, object_key, sidecar_key, size, sha256,"
                " stored_at, frames, json, metadata)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (sop_uid) DO UPDATE SET series_uid = excluded.series_uid,"
                " study_uid = excluded.study_uid, sop_class_uid = excluded.sop_class_uid,"
                " instance_number = excluded.instance_number,"
                " transfer_syntax_uid = excluded.transfer_syntax_uid,"
                " object_key = excluded.object_key, sidecar_key = excluded.sidecar_key,"
                " size = excluded.size, sha256 = excluded.sha256,"
                " stored_at = excluded.stored_at, frames = excluded.frames,"
                " json = excluded.json, metadata = excluded.metadata",
                (
                    record.sop_uid,
                    record.series_uid,
                    record.study_uid,
                    record.sop_class_uid,
                    split.instance_keys.instance_number,
                    record.transfer_syntax_uid,
                    record.object_key,
                    record.sidecar_key,
                    record.size,
                    record.sha256,
                    record.stored_at,
                    frames,
                    _dumps(split.instance),
                    _dumps(metadata),
                ),
            )
            if previous is not None:
                old_series, old_study, _, _ = previous
                if old_series != record.series_uid:
                    db.execute(
                        "DELETE FROM series WHERE series_uid = ?"
                        " AND NOT EXISTS (SELECT 1 FROM instances WHERE series_uid = ?)",
                        (old_series, old_series),
                    )
                if old_study != record.study_uid:
                    self._drop_empty_study(db, old_study)
        if previous is None:
            return IndexReply(indexed=True)
        return IndexReply(
            indexed=True,
            replaced=True,
            previous_object_key=previous[2],
            previous_sidecar_key=previous[3],
        )

    @staticmethod
    def _drop_empty_study(db: sqlite3.Connection, study_uid: str) -> None:
        db.execute(
            "DELETE FROM studies WHERE study_uid = ?"
            " AND NOT EXISTS (SELECT 1 FROM series WHERE study_uid = ?)",
            (study_uid, study_uid),
        )

    # -- reading ---------------------------------------------------------------------------

    def contains(self, sop_uid: str, sha256: str) -> bool:
        with self._lock:
            row = self._conn.execute(
                "SELECT 1 FROM instances WHERE sop_uid = ? AND sha256 = ?", (sop_uid, sha256)
            ).fetchone()
        return row is not None

    def instance_metadata(self, sop_uid: str) -> str | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT metadata FROM instances WHERE sop_uid = ?", (sop_uid,)
            ).fetchone()
        return str(row[0]) if row is not None else None

    def metadata_page(self, req: MetadataRequest) -> MetadataReply:
        """Stored instance JSON of a study, series or instance, one page below PAGE_BYTES."""
        conditions, params = ["study_uid = ?"], [req.study_uid]
        if req.series_uid is not None:
            conditions.append("series_uid = ?")
            params.append(req.series_uid)
        if req.sop_uid is not None:
            conditions.append("sop_uid = ?")
            params.append(req.sop_uid)
        sql = (
            "SELECT metadata FROM instances WHERE "  # noqa: S608 - fixed column conditions
            + " AND ".join(conditions)
            + " ORDER BY series_uid, instance_number, sop_uid LIMIT -1 OFFSET ?"
        )
        budget = _PageBudget()
        documents: list[str] = []
        with self._lock:
            cursor = self._conn.execute(sql, (*params, req.offset))
            for (document,) in cursor:
                if not budget.admit(len(document)):
                    cursor.close()
                    return MetadataReply(
                        documents=documents, next_offset=req.offset + len(documents)
                    )
                documents.append(document)
        return MetadataReply(documents=documents)

    def ping(self) -> bool:
        try:
            with self._lock:
                self._conn.execute("SELECT 1").fetchone()
        except sqlite3.Error:
            return False
        return True

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def search(self, req: SearchRequest) -> SearchReply:
        """One page of results for ``req`` (PS3.18 §10.6.3).

        Matches beyond ``offset + limit`` set ``more_available``; a page cut because its
        serialized results would exceed ``PAGE_BYTES`` sets ``next_offset``, where the caller
        continues the same window.
        """
        sql, params = compile_search(req)
        compose = _COMPOSERS[req.level]
        budget = _PageBudget()
        results: list[JsonDataset] = []
        cut = False
        with self._lock, self._transaction("DEFERRED") as db:
            keys = db.execute(sql, params).fetchall()
            more_available = len(keys) > req.limit
            keys = keys[: req.limit]
            for batch in _batches(keys):
                for result in compose(db, req, batch):
                    if not budget.admit(len(orjson.dumps(result))):
                        cut = True
                        break
                    results.append(result)
                if cut:
                    break
        next_offset = req.offset + len(results) if cut else None
        return SearchReply(results=results, next_offset=next_offset, more_available=more_available)

    def locate(self, req: LocateRequest) -> LocateReply:
        """The instances to retrieve, ordered by series number then instance number; a page
        holds at most ``req.limit`` instances and stays under ``PAGE_BYTES``."""
        limit = min(max(req.limit, 1), MAX_LOCATE_LIMIT)
        sql, params = compile_locate(req, limit=limit)
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        budget = _PageBudget()
        instances: list[LocatedInstance] = []
        for row in rows[:limit]:
            located = LocatedInstance(**dict(zip(LOCATE_COLUMNS, row, strict=True)))
            if not budget.admit(len(located.model_dump_json())):
                break
            instances.append(located)
        more = len(rows) > len(instances)
        return LocateReply(
            instances=instances, next_offset=req.offset + len(instances) if more else None
        )


# -- composing results ---------------------------------------------------------------------


def _documents(
    db: sqlite3.Connection, sql: str, uids: Sequence[str]
) -> dict[str, tuple[JsonDataset, ...]]:
    """Rows of ``sql`` (a key column, then JSON text columns, filtered by ``IN ({marks})``)
    for ``uids``, keyed by the first column, each JSON column parsed (NULL stays empty)."""
    found: dict[str, tuple[JsonDataset, ...]] = {}
    unique = list(dict.fromkeys(uids))
    for batch in _batches(unique):
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
            ),
            include_fields=req.include_fields,
            include_all=req.include_all,
        )


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

_COMPOSERS: dict[QueryLevel, _Composer] = {
    QueryLevel.STUDY: _study_results,
    QueryLevel.SERIES: _series_results,
    QueryLevel.INSTANCE: _instance_results,
}
