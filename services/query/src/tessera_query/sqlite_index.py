"""The embedded index: SQLite behind the ``Index`` port.

One connection in WAL mode, shared by the worker threads the service runs it on and guarded by
a lock (SQLite connections are not safe for concurrent use). Writes are one transaction per
batch of instances (``upsert_many``: a STOW request's), so an instance is visible with its
study and series rows or not at all (ARCHITECTURE invariant 2). Searches run the compiled key
query and read the page's stored JSON inside one read transaction, so a page is a consistent
snapshot.

The schema carries a version (``PRAGMA user_version``). An index written by an older version is
rebuilt in place on opening, from the instance JSON and records it keeps: the index is derived
data (ARCHITECTURE invariant 4), so its layout may change freely between versions.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from tessera_common.dicom_json import JsonDataset
from tessera_common.errors import ErrorCode, TesseraError
from tessera_common.messages import (
    ContentsReply,
    FrameIndex,
    IndexReply,
    InstanceRecord,
    LocatedInstance,
    LocateReply,
    LocateRequest,
    MetadataReply,
    MetadataRequest,
    SearchReply,
    SearchRequest,
    contents_digest,
)

from .attributes import LevelSplit, split_levels
from .match_keys import first
from .paging import PageBudget, batches
from .sql import (
    LOCATE_COLUMNS,
    SCHEMA,
    SCHEMA_VERSION,
    compile_contents,
    compile_locate,
    compile_metadata_page,
    compile_search,
)
from .sqlite_results import COMPOSERS

log = logging.getLogger(__name__)

#: The most instances one locate page may list.
MAX_LOCATE_LIMIT = 10000
#: A search still running after this many seconds is abandoned as too broad (PS3.18 §10.6.3,
#: 413): it would hold the index's connection from every other request.
SEARCH_SECONDS = 20.0
_PROGRESS_STEPS = 20_000

_RECORD_COLUMNS = (
    "sop_uid, series_uid, study_uid, sop_class_uid, transfer_syntax_uid, object_key,"
    " sidecar_key, size, sha256, stored_at, frames, metadata"
)


def _dumps(dataset: Mapping[str, Any]) -> str:
    return orjson.dumps(dataset).decode()


def _study_columns(split: LevelSplit) -> tuple[Any, ...]:
    """The study row's indexed columns, from its match document (``sql.HOT_COLUMNS``)."""
    keys = split.study_keys
    words = keys.get("00100010:F")
    return (
        first(keys, "00100020"),
        first(keys, "00100010:A"),
        first(keys, "00100010:I"),
        first(keys, "00100010:P"),
        " " + " ".join(words) + " " if words else None,
        first(keys, "00080050"),
        first(keys, "00080020"),
        first(keys, "00080030"),
        first(keys, "00080020:U"),
        first(keys, "00200010"),
    )


def _index_reply(previous: tuple[str, str, str, str] | None) -> IndexReply:
    if previous is None:
        return IndexReply(indexed=True)
    return IndexReply(
        indexed=True,
        replaced=True,
        previous_object_key=previous[2],
        previous_sidecar_key=previous[3],
    )


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class SqliteIndex:
    """The ``Index`` port on a SQLite file (created with its schema when missing)."""

    def __init__(
        self,
        path: Path,
        *,
        search_seconds: float = SEARCH_SECONDS,
        progress_steps: int = _PROGRESS_STEPS,
    ) -> None:
        self._lock = threading.Lock()
        self._search_seconds = search_seconds
        self._deadline: float | None = None
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA busy_timeout=5000")
            self._conn.execute("PRAGMA cache_size=-65536")
            self._conn.set_progress_handler(self._over_time, progress_steps)
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            existing = self._conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'instances'"
            ).fetchone()
            if existing is not None and version != SCHEMA_VERSION:
                self._rebuild(version)
            with self._transaction():
                for statement in SCHEMA:
                    self._conn.execute(statement)
                self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _over_time(self) -> int:
        """SQLite's progress handler: a non-zero answer interrupts the running statement."""
        deadline = self._deadline
        return 1 if deadline is not None and time.monotonic() > deadline else 0

    def _rebuild(self, version: int) -> None:
        """Re-derive every row from the instances table of an older schema (caller holds the
        lock): the old tables are renamed, the new ones created, each instance indexed again."""
        log.warning("index schema %s is older than %s: rebuilding it", version, SCHEMA_VERSION)
        with self._transaction():
            for table in ("studies", "series", "instances"):
                self._conn.execute(f"ALTER TABLE {table} RENAME TO old_{table}")
            for row in self._conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name LIKE 'old_%'"
                " AND sql IS NOT NULL"
            ).fetchall():
                self._conn.execute(f'DROP INDEX "{row[0]}"')
            for statement in SCHEMA:
                self._conn.execute(statement)
            rows = self._conn.execute(
                f"SELECT {_RECORD_COLUMNS} FROM old_instances"  # noqa: S608 - fixed columns
            ).fetchall()
            for row in rows:
                (
                    sop,
                    series,
                    study,
                    sop_class,
                    syntax,
                    key,
                    sidecar,
                    size,
                    sha,
                    at,
                    frames,
                    meta,
                ) = row
                record = InstanceRecord(
                    study_uid=study,
                    series_uid=series,
                    sop_uid=sop,
                    sop_class_uid=sop_class,
                    transfer_syntax_uid=syntax,
                    object_key=key,
                    sidecar_key=sidecar,
                    size=size,
                    sha256=sha,
                    stored_at=at,
                    frames=FrameIndex.model_validate_json(frames) if frames else None,
                )
                self._write(self._conn, record, orjson.loads(meta))
            for table in ("studies", "series", "instances"):
                self._conn.execute(f"DROP TABLE old_{table}")

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
        return self.upsert_many([(record, metadata)])[0]

    def upsert_many(
        self, items: Sequence[tuple[InstanceRecord, Mapping[str, Any]]]
    ) -> list[IndexReply]:
        """``upsert`` each (record, metadata) in order, in one transaction: a STOW request's
        instances become visible together, and pay for one commit instead of one each."""
        with self._lock, self._transaction() as db:
            previous = [self._write(db, record, metadata) for record, metadata in items]
        return [_index_reply(replaced) for replaced in previous]

    def _write(
        self, db: sqlite3.Connection, record: InstanceRecord, metadata: Mapping[str, Any]
    ) -> tuple[str, str, str, str] | None:
        """Write one instance's rows inside the caller's transaction; the replaced instance's
        (series, study, object key, sidecar key), if any."""
        split = split_levels(
            metadata,
            study_uid=record.study_uid,
            series_uid=record.series_uid,
            sop_uid=record.sop_uid,
        )
        frames = record.frames.model_dump_json() if record.frames is not None else None
        previous = db.execute(
            "SELECT series_uid, study_uid, object_key, sidecar_key FROM instances"
            " WHERE sop_uid = ?",
            (record.sop_uid,),
        ).fetchone()
        series_row = db.execute(
            "SELECT study_uid FROM series WHERE series_uid = ?", (record.series_uid,)
        ).fetchone()
        db.execute(
            "INSERT INTO studies (study_uid, patient_id, patient_name, patient_name_i,"
            " patient_name_p, patient_words, accession_number, study_date, study_time,"
            " study_instant, study_id, json, keys) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (study_uid) DO UPDATE SET patient_id = excluded.patient_id,"
            " patient_name = excluded.patient_name, patient_name_i = excluded.patient_name_i,"
            " patient_name_p = excluded.patient_name_p,"
            " patient_words = excluded.patient_words,"
            " accession_number = excluded.accession_number,"
            " study_date = excluded.study_date, study_time = excluded.study_time,"
            " study_instant = excluded.study_instant, study_id = excluded.study_id,"
            " json = excluded.json, keys = excluded.keys",
            (
                record.study_uid,
                *_study_columns(split),
                _dumps(split.study),
                _dumps(split.study_keys),
            ),
        )
        db.execute(
            "INSERT INTO series (series_uid, study_uid, modality, series_number, json, keys)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (series_uid) DO UPDATE SET"
            " study_uid = excluded.study_uid, modality = excluded.modality,"
            " series_number = excluded.series_number, json = excluded.json,"
            " keys = excluded.keys",
            (
                record.series_uid,
                record.study_uid,
                first(split.series_keys, "00080060"),
                _integer(first(split.series_keys, "00200011")),
                _dumps(split.series),
                _dumps(split.series_keys),
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
            " stored_at, frames, json, keys, metadata)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (sop_uid) DO UPDATE SET series_uid = excluded.series_uid,"
            " study_uid = excluded.study_uid, sop_class_uid = excluded.sop_class_uid,"
            " instance_number = excluded.instance_number,"
            " transfer_syntax_uid = excluded.transfer_syntax_uid,"
            " object_key = excluded.object_key, sidecar_key = excluded.sidecar_key,"
            " size = excluded.size, sha256 = excluded.sha256,"
            " stored_at = excluded.stored_at, frames = excluded.frames,"
            " json = excluded.json, keys = excluded.keys, metadata = excluded.metadata",
            (
                record.sop_uid,
                record.series_uid,
                record.study_uid,
                record.sop_class_uid,
                _integer(first(split.instance_keys, "00200013")),
                record.transfer_syntax_uid,
                record.object_key,
                record.sidecar_key,
                record.size,
                record.sha256,
                record.stored_at,
                frames,
                _dumps(split.instance),
                _dumps(split.instance_keys),
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
        return None if previous is None else (previous[0], previous[1], previous[2], previous[3])

    def delete(self, sop_uids: Sequence[str]) -> list[LocatedInstance]:
        """Remove instances, then the series and studies they leave empty, in one transaction
        (ARCHITECTURE invariant 2: a search sees all of a deletion or none of it)."""
        unique = sorted(set(sop_uids))
        if not unique:
            return []
        marks = ", ".join("?" * len(unique))
        columns = ", ".join(LOCATE_COLUMNS)
        with self._lock, self._transaction() as db:
            rows = db.execute(
                f"SELECT {columns} FROM instances WHERE sop_uid IN ({marks})",  # noqa: S608
                unique,
            ).fetchall()
            removed = [
                LocatedInstance(**dict(zip(LOCATE_COLUMNS, row, strict=True))) for row in rows
            ]
            db.execute(f"DELETE FROM instances WHERE sop_uid IN ({marks})", unique)  # noqa: S608
            for series_uid in sorted({found.series_uid for found in removed}):
                db.execute(
                    "DELETE FROM series WHERE series_uid = ?"
                    " AND NOT EXISTS (SELECT 1 FROM instances WHERE series_uid = ?)",
                    (series_uid, series_uid),
                )
            for study_uid in sorted({found.study_uid for found in removed}):
                self._drop_empty_study(db, study_uid)
        return removed

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
        sql, params = compile_metadata_page(req)
        budget = PageBudget()
        documents: list[str] = []
        with self._lock:
            cursor = self._conn.execute(sql, params)
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
        compose = COMPOSERS[req.level]
        budget = PageBudget()
        results: list[JsonDataset] = []
        cut = False
        with self._lock, self._transaction("DEFERRED") as db:
            self._deadline = time.monotonic() + self._search_seconds
            try:
                keys = db.execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:
                if "interrupted" not in str(exc):
                    raise
                raise TesseraError(
                    ErrorCode.PAYLOAD_TOO_LARGE,
                    f"the search was too broad: it ran longer than {self._search_seconds:g} s;"
                    " narrow it with indexed keys (PatientID, StudyDate, AccessionNumber…)",
                ) from None
            finally:
                self._deadline = None
            more_available = len(keys) > req.limit
            keys = keys[: req.limit]
            for batch in batches(keys):
                for result in compose(db, req, batch):
                    if not budget.admit(len(orjson.dumps(result))):
                        cut = True
                        break
                    results.append(result)
                if cut:
                    break
        next_offset = req.offset + len(results) if cut else None
        return SearchReply(results=results, next_offset=next_offset, more_available=more_available)

    def contents(self, req: LocateRequest) -> ContentsReply:
        """How many instances ``req`` names and their ``contents_digest``."""
        sql, params = compile_contents(req)
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        return ContentsReply(count=len(rows), digest=contents_digest(rows))

    def locate(self, req: LocateRequest) -> LocateReply:
        """The instances to retrieve, ordered by series number then instance number; a page
        holds at most ``req.limit`` instances and stays under ``PAGE_BYTES``."""
        limit = min(max(req.limit, 1), MAX_LOCATE_LIMIT)
        sql, params = compile_locate(req, limit=limit)
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        budget = PageBudget()
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
