"""The embedded SQLite index on a real database file: indexing, QIDO search, locate."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from tessera_common.dicom_json import element, first_value
from tessera_common.errors import TesseraError
from tessera_common.messages import (
    PAGE_BYTES,
    FrameIndex,
    InstanceRecord,
    LocateRequest,
    MetadataRequest,
    QueryLevel,
    SearchReply,
)
from tessera_common.qido import parse_search
from tessera_query.index import BlockingIndex, Index, ThreadedIndex
from tessera_query.sql import SCHEMA_VERSION, compile_metadata_page
from tessera_query.sqlite_index import SqliteIndex

STUDY, SERIES, INSTANCE = QueryLevel.STUDY, QueryLevel.SERIES, QueryLevel.INSTANCE
ROOT = "1.2.826.0.1.3680043.8.498"

SOP_CLASSES = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "US": "1.2.840.10008.5.1.4.1.1.6.1",
    "SR": "1.2.840.10008.5.1.4.1.1.88.11",
}


@dataclass(frozen=True)
class SyntheticStudy:
    number: int
    patient_name: dict[str, str]
    patient_id: str
    accession: str
    study_date: str | None
    modalities: tuple[str, str]  # of series 1 and 2

    @property
    def uid(self) -> str:
        return f"{ROOT}.{self.number}"


STUDIES = [
    SyntheticStudy(1, {"Alphabetic": "Müller^Jürgen"}, "P1", "A1", "20240105", ("CT", "SR")),
    SyntheticStudy(
        2,
        {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎"},
        "P2",
        "A2",
        "20230301",
        ("MR", "MR"),
    ),
    SyntheticStudy(3, {"Alphabetic": "Núñez^José"}, "P3", "A3", None, ("US", "CT")),
]


def series_uid(study: int, series: int) -> str:
    return f"{ROOT}.{study}.{series}"


def sop_uid(study: int, series: int, instance: int) -> str:
    return f"{ROOT}.{study}.{series}.{instance}"


def instance_metadata(
    study: SyntheticStudy, series: int, instance: int, **extra: dict[str, Any]
) -> dict[str, Any]:
    modality = study.modalities[series - 1]
    dataset = {
        "00080005": element("CS", "ISO_IR 192"),
        "00080016": element("UI", SOP_CLASSES[modality]),
        "00080018": element("UI", sop_uid(study.number, series, instance)),
        "00080050": element("SH", study.accession),
        "00080060": element("CS", modality),
        "00080090": element("PN", {"Alphabetic": "Dvořák^Antonín"}),
        "00081030": element("LO", f"Study {study.number} — Übersicht"),
        "0008103E": element("LO", f"Series {series}"),
        "00100010": element("PN", study.patient_name),
        "00100020": element("LO", study.patient_id),
        "00100030": element("DA", "19700101"),
        "00100040": element("CS", "O"),
        "00180015": element("CS", "CHEST"),
        "00180050": element("DS", 2.5),
        "0020000D": element("UI", study.uid),
        "0020000E": element("UI", series_uid(study.number, series)),
        "00200010": element("SH", f"S{study.number}"),
        "00200011": element("IS", series),
        "00200013": element("IS", instance),
        "00280010": element("US", 512),
        "00280011": element("US", 512),
        "00280100": element("US", 16),
        "7FE00010": {"vr": "OW", "BulkDataURI": f"studies/{study.uid}/bulk/7FE00010"},
    }
    if study.study_date is not None:
        dataset["00080020"] = element("DA", study.study_date)
        dataset["00080030"] = element("TM", "101500")
    dataset.update(extra)
    return dataset


def instance_record(
    study_uid: str, series: str, sop: str, metadata: dict[str, Any], *, sha256: str = "ab" * 32
) -> InstanceRecord:
    return InstanceRecord(
        study_uid=study_uid,
        series_uid=series,
        sop_uid=sop,
        sop_class_uid=str(first_value(metadata, 0x00080016)),
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        object_key=f"objects/{sop}.dcm",
        sidecar_key=f"sidecars/{sop}.json",
        size=1234,
        sha256=sha256,
        stored_at="2025-01-01T00:00:00Z",
        frames=FrameIndex(encapsulated=False, number_of_frames=1, data_offset=1000),
        metadata=None,
    )


def all_instances() -> list[tuple[InstanceRecord, dict[str, Any]]]:
    items = []
    for study in STUDIES:
        for series in (1, 2):
            for instance in (1, 2, 3):
                metadata = instance_metadata(study, series, instance)
                record = instance_record(
                    study.uid,
                    series_uid(study.number, series),
                    sop_uid(study.number, series, instance),
                    metadata,
                )
                items.append((record, metadata))
    return items


@pytest.fixture
def index(tmp_path: Path) -> Iterator[SqliteIndex]:
    items = all_instances()
    random.Random(7).shuffle(items)  # result order must not depend on indexing order
    with SqliteIndex(tmp_path / "index.sqlite") as db:
        for record, metadata in items:
            assert db.upsert(record, metadata).replaced is False
        yield db


def search(
    db: Index,
    level: QueryLevel,
    params: Sequence[tuple[str, str]] = (),
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
) -> SearchReply:
    request = parse_search(level, list(params), study_uid=study_uid, series_uid=series_uid)
    return db.search(request)


def uids(reply: SearchReply, tag: int) -> list[str]:
    return [str(first_value(result, tag)) for result in reply.results]


def value(result: dict[str, Any], tag: int) -> Any:
    return first_value(result, tag)


def test_sqlite_index_satisfies_the_port(index: SqliteIndex) -> None:
    blocking: BlockingIndex = index
    assert blocking.ping()


async def test_threaded_index_is_the_async_port(index: SqliteIndex) -> None:
    port: Index = ThreadedIndex(index)
    assert await port.ping()
    reply = await port.search(parse_search(STUDY, [("PatientID", "P2")]))
    assert uids(reply, 0x0020000D) == [STUDIES[1].uid]
    assert await port.contains(sop_uid(2, 1, 1), "ab" * 32)


def test_patient_counts(index: SqliteIndex) -> None:
    extra = SyntheticStudy(8, {"Alphabetic": "Yamada^Tarou"}, "P2", "A8", "20200101", ("CT", "CT"))
    metadata = instance_metadata(extra, 1, 1)
    index.upsert(instance_record(extra.uid, series_uid(8, 1), sop_uid(8, 1, 1), metadata), metadata)
    reply = search(
        index, STUDY, [("PatientID", "P2"), ("includefield", "NumberOfPatientRelatedInstances")]
    )
    assert [value(r, 0x00201204) for r in reply.results] == [7, 7]
    everything = search(index, STUDY, [("PatientID", "P2"), ("includefield", "all")])
    assert [value(r, 0x00201200) for r in everything.results] == [2, 2]
    assert [value(r, 0x00201202) for r in everything.results] == [3, 3]
    plain = search(index, STUDY, [("PatientID", "P2")])
    assert "00201204" not in plain.results[0]


def test_a_search_running_too_long_is_refused(tmp_path: Path) -> None:
    with SqliteIndex(tmp_path / "slow.sqlite", search_seconds=0.0, progress_steps=1) as db:
        for record, metadata in all_instances():
            db.upsert(record, metadata)
        with pytest.raises(TesseraError) as caught:
            db.search(parse_search(INSTANCE, [("SliceThickness", "2.5")]))
        assert caught.value.http_status == 413
        assert "too broad" in caught.value.reason


OLD_SCHEMA = (
    "CREATE TABLE studies (study_uid TEXT PRIMARY KEY, patient_id TEXT, json TEXT NOT NULL)"
    " WITHOUT ROWID",
    "CREATE INDEX studies_patient_id ON studies (patient_id)",
    "CREATE TABLE series (series_uid TEXT PRIMARY KEY, study_uid TEXT NOT NULL,"
    " json TEXT NOT NULL) WITHOUT ROWID",
    "CREATE TABLE instances (sop_uid TEXT PRIMARY KEY, series_uid TEXT NOT NULL,"
    " study_uid TEXT NOT NULL, sop_class_uid TEXT NOT NULL, instance_number INTEGER,"
    " transfer_syntax_uid TEXT NOT NULL, object_key TEXT NOT NULL, sidecar_key TEXT NOT NULL,"
    " size INTEGER NOT NULL, sha256 TEXT NOT NULL, stored_at TEXT NOT NULL, frames TEXT,"
    " json TEXT NOT NULL, metadata TEXT NOT NULL)",
    "CREATE INDEX instances_series ON instances (series_uid, instance_number)",
)


def test_an_older_index_is_rebuilt_from_its_instances(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as old:
        for statement in OLD_SCHEMA:
            old.execute(statement)
        for record, metadata in all_instances()[:4]:
            old.execute(
                "INSERT INTO instances VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, '{}', ?)",
                (
                    record.sop_uid,
                    record.series_uid,
                    record.study_uid,
                    record.sop_class_uid,
                    record.transfer_syntax_uid,
                    record.object_key,
                    record.sidecar_key,
                    record.size,
                    record.sha256,
                    record.stored_at,
                    record.frames.model_dump_json() if record.frames else None,
                    orjson.dumps(metadata).decode(),
                ),
            )
    with SqliteIndex(path) as db:
        assert len(search(db, INSTANCE).results) == 4
        assert uids(search(db, STUDY, [("PatientName", "müller*")]), 0x0020000D) == [S1]
        located = db.locate(LocateRequest(study_uid=S1))
        assert located.instances[0].object_key == all_instances()[0][0].object_key
    with sqlite3.connect(path) as reopened:
        assert reopened.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in reopened.execute("SELECT name FROM sqlite_master")}
        assert not any(name.startswith("old_") for name in tables)


@pytest.mark.parametrize("series", [True, False], ids=["series", "study"])
def test_metadata_pages_are_read_in_index_order(index: SqliteIndex, series: bool) -> None:
    """No page sorts the instances (and their JSON) again: each reads an ordered index."""
    record = all_instances()[0][0]
    request = MetadataRequest(
        study_uid=record.study_uid, series_uid=record.series_uid if series else None, offset=2
    )
    sql, params = compile_metadata_page(request)
    with index._lock:
        plan = index._conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
    details = " ".join(str(row[-1]) for row in plan)
    assert "TEMP B-TREE" not in details, details
    assert "_order" in details, details


def test_an_index_of_the_previous_layout_gains_the_order_indexes(tmp_path: Path) -> None:
    path = tmp_path / "previous.sqlite"
    with SqliteIndex(path) as db:
        db._conn.execute("DROP INDEX instances_series_order")
        db._conn.execute("DROP INDEX instances_study_order")
        db._conn.execute("CREATE INDEX instances_series ON instances (series_uid, instance_number)")
    with SqliteIndex(path), sqlite3.connect(path) as reopened:
        names = {r[0] for r in reopened.execute("SELECT name FROM sqlite_master")}
    assert {"instances_series_order", "instances_study_order"} <= names
    assert "instances_series" not in names


def test_database_is_in_wal_mode(index: SqliteIndex, tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "index.sqlite") as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_studies_with_computed_attributes(index: SqliteIndex) -> None:
    reply = search(index, STUDY)
    assert uids(reply, 0x0020000D) == [f"{ROOT}.1", f"{ROOT}.2", f"{ROOT}.3"]  # date desc
    assert not reply.more_available and reply.next_offset is None
    first = reply.results[0]
    assert value(first, 0x00100010) == {"Alphabetic": "Müller^Jürgen"}
    assert first["00080061"] == element("CS", "CT", "SR")  # ModalitiesInStudy
    assert first["00080062"] == element("UI", SOP_CLASSES["CT"], SOP_CLASSES["SR"])
    assert value(first, 0x00201206) == 2  # NumberOfStudyRelatedSeries
    assert value(first, 0x00201208) == 6  # NumberOfStudyRelatedInstances
    assert value(first, 0x00080056) == "ONLINE"
    assert value(first, 0x00081190) == f"studies/{ROOT}.1"
    assert value(first, 0x00080090) == {"Alphabetic": "Dvořák^Antonín"}
    assert "00081030" not in first  # StudyDescription is not required
    assert "00080060" not in first  # a series attribute
    assert list(first) == sorted(first)
    assert reply.results[1]["00080061"] == element("CS", "MR")
    assert reply.results[1]["00100010"] == element(
        "PN", {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎"}
    )


def test_series_with_computed_and_relational_attributes(index: SqliteIndex) -> None:
    reply = search(index, SERIES, study_uid=f"{ROOT}.2")
    assert uids(reply, 0x0020000E) == [series_uid(2, 1), series_uid(2, 2)]
    first = reply.results[0]
    assert value(first, 0x00201209) == 3  # NumberOfSeriesRelatedInstances
    assert value(first, 0x00081190) == f"studies/{ROOT}.2/series/{series_uid(2, 1)}"
    assert value(first, 0x00080060) == "MR"
    assert value(first, 0x0020000D) == f"{ROOT}.2"
    assert "00100010" not in first  # the study is in the path: no study attributes

    everywhere = search(index, SERIES, [("SeriesInstanceUID", series_uid(2, 1))])
    assert value(everywhere.results[0], 0x00100020) == "P2"  # relational study attributes
    assert "00201206" not in everywhere.results[0]  # but not the study's computed ones


@dataclass(frozen=True)
class SearchCase:
    id: str
    level: QueryLevel
    params: list[tuple[str, str]]
    expected: list[str]
    study_uid: str | None = None
    series_uid: str | None = None


S1, S2, S3 = (f"{ROOT}.{n}" for n in (1, 2, 3))

SEARCHES = [
    SearchCase("StudyInstanceUID", STUDY, [("StudyInstanceUID", S2)], [S2]),
    SearchCase("StudyInstanceUID list", STUDY, [("StudyInstanceUID", f"{S3},{S1}")], [S1, S3]),
    SearchCase("PatientID", STUDY, [("PatientID", "P3")], [S3]),
    SearchCase("PatientID by tag", STUDY, [("00100020", "P1")], [S1]),
    SearchCase("PatientName non-ASCII", STUDY, [("PatientName", "Núñez^José")], [S3]),
    SearchCase("PatientName is exact", STUDY, [("PatientName", "Müller")], []),
    SearchCase("AccessionNumber", STUDY, [("AccessionNumber", "A2")], [S2]),
    SearchCase("StudyDate", STUDY, [("StudyDate", "20240105")], [S1]),
    SearchCase("StudyID", STUDY, [("StudyID", "S2")], [S2]),
    SearchCase("ModalitiesInStudy", STUDY, [("ModalitiesInStudy", "CT")], [S1, S3]),
    SearchCase("universal matching matches all", STUDY, [("PatientID", "")], [S1, S2, S3]),
    SearchCase("no match", STUDY, [("PatientID", "nobody")], []),
    SearchCase("two keys", STUDY, [("PatientID", "P1"), ("ModalitiesInStudy", "MR")], []),
    SearchCase(
        "Modality across studies",
        SERIES,
        [("Modality", "CT")],
        [series_uid(1, 1), series_uid(3, 2)],
    ),
    SearchCase(
        "SeriesInstanceUID list",
        SERIES,
        [("SeriesInstanceUID", f"{series_uid(3, 1)}\\{series_uid(1, 2)}")],
        [series_uid(1, 2), series_uid(3, 1)],
    ),
    SearchCase(
        "SeriesNumber within a study",
        SERIES,
        [("SeriesNumber", "2")],
        [series_uid(3, 2)],
        study_uid=S3,
    ),
    SearchCase(
        "relational PatientName at series level",
        SERIES,
        [("PatientName", "Yamada^Tarou")],
        [series_uid(2, 1), series_uid(2, 2)],
    ),
    SearchCase(
        "series of another study is out of scope",
        SERIES,
        [("SeriesInstanceUID", series_uid(1, 1))],
        [],
        study_uid=S2,
    ),
    SearchCase(
        "SOPInstanceUID",
        INSTANCE,
        [("SOPInstanceUID", sop_uid(2, 2, 3))],
        [sop_uid(2, 2, 3)],
    ),
    SearchCase(
        "SOPClassUID",
        INSTANCE,
        [("SOPClassUID", SOP_CLASSES["SR"])],
        [sop_uid(1, 2, k) for k in (1, 2, 3)],
    ),
    SearchCase(
        "InstanceNumber in a series",
        INSTANCE,
        [("InstanceNumber", "2")],
        [sop_uid(3, 1, 2)],
        study_uid=S3,
        series_uid=series_uid(3, 1),
    ),
    SearchCase(
        "instances of a study in series then instance order",
        INSTANCE,
        [],
        [sop_uid(1, s, k) for s in (1, 2) for k in (1, 2, 3)],
        study_uid=S1,
    ),
    SearchCase(
        "relational study and series keys at instance level",
        INSTANCE,
        [("PatientID", "P3"), ("Modality", "CT"), ("InstanceNumber", "3")],
        [sop_uid(3, 2, 3)],
    ),
    SearchCase(
        "relational ModalitiesInStudy at instance level",
        INSTANCE,
        [("ModalitiesInStudy", "SR"), ("SeriesNumber", "1"), ("InstanceNumber", "1")],
        [sop_uid(1, 1, 1)],
    ),
]


@pytest.mark.parametrize("case", SEARCHES, ids=lambda case: case.id)
def test_search(index: SqliteIndex, case: SearchCase) -> None:
    reply = search(
        index, case.level, case.params, study_uid=case.study_uid, series_uid=case.series_uid
    )
    tag = {STUDY: 0x0020000D, SERIES: 0x0020000E, INSTANCE: 0x00080018}[case.level]
    assert uids(reply, tag) == case.expected


def test_instance_results_carry_relational_attributes(index: SqliteIndex) -> None:
    reply = search(index, INSTANCE, [("SOPInstanceUID", sop_uid(1, 2, 1))])
    (result,) = reply.results
    assert value(result, 0x00100010) == {"Alphabetic": "Müller^Jürgen"}  # study
    assert value(result, 0x00080060) == "SR"  # series
    assert value(result, 0x0020000D) == S1
    assert value(result, 0x0020000E) == series_uid(1, 2)
    assert value(result, 0x00080016) == SOP_CLASSES["SR"]
    assert value(result, 0x00200013) == 1
    assert value(result, 0x00280010) == 512
    assert value(result, 0x00081190) == (
        f"studies/{S1}/series/{series_uid(1, 2)}/instances/{sop_uid(1, 2, 1)}"
    )
    assert "7FE00010" not in result

    scoped = search(index, INSTANCE, study_uid=S1, series_uid=series_uid(1, 2))
    first = scoped.results[0]
    assert "00100010" not in first and "00080060" not in first
    assert value(first, 0x0020000D) == S1 and value(first, 0x0020000E) == series_uid(1, 2)


def test_includefield(index: SqliteIndex) -> None:
    study = search(index, STUDY, [("PatientID", "P1"), ("includefield", "StudyDescription")])
    assert value(study.results[0], 0x00081030) == "Study 1 — Übersicht"

    series = search(index, SERIES, [("includefield", "00180015,PatientID")], study_uid=S1)
    assert value(series.results[0], 0x00180015) == "CHEST"  # from the series
    assert value(series.results[0], 0x00100020) == "P1"  # from its study

    instance = search(
        index,
        INSTANCE,
        [("includefield", "SliceThickness"), ("includefield", "PixelData")],
        study_uid=S1,
    )
    assert value(instance.results[0], 0x00180050) == 2.5  # from the full instance JSON
    assert "7FE00010" not in instance.results[0]  # bulk data is never returned


def test_includefield_all(index: SqliteIndex) -> None:
    study = search(index, STUDY, [("includefield", "all")])
    assert "00081030" in study.results[0]
    assert value(study.results[0], 0x00201208) == 6

    series = search(index, SERIES, [("includefield", "all")], study_uid=S2)
    assert value(series.results[0], 0x00180015) == "CHEST"

    instance = search(index, INSTANCE, [("includefield", "all")], study_uid=S2)
    first = instance.results[0]
    assert value(first, 0x00180050) == 2.5
    assert value(first, 0x00081190).endswith(sop_uid(2, 1, 1))
    assert "7FE00010" not in first


@pytest.mark.parametrize(
    ("level", "limit", "offset", "count", "more"),
    [
        (STUDY, 2, 0, 2, True),
        (STUDY, 2, 2, 1, False),
        (STUDY, 3, 0, 3, False),
        (STUDY, 0, 0, 0, True),
        (STUDY, 5, 10, 0, False),
        (SERIES, 4, 4, 2, False),
        (INSTANCE, 5, 0, 5, True),
        (INSTANCE, 5, 15, 3, False),
    ],
    ids=lambda v: str(v),
)
def test_limit_offset_more_available(
    index: SqliteIndex, level: QueryLevel, limit: int, offset: int, count: int, more: bool
) -> None:
    everything = search(index, level)
    reply = search(index, level, [("limit", str(limit)), ("offset", str(offset))])
    assert len(reply.results) == count
    assert reply.more_available is more
    assert reply.next_offset is None
    assert reply.results == everything.results[offset : offset + limit]


def test_page_is_cut_by_bytes(tmp_path: Path) -> None:
    big = "x" * 100_000
    with SqliteIndex(tmp_path / "big.sqlite") as db:
        for number in range(12):
            study = SyntheticStudy(
                100 + number, {"Alphabetic": "Ærø^Åse"}, "PB", "AB", "20200101", ("CT", "CT")
            )
            metadata = instance_metadata(study, 1, 1, **{"00081030": element("LO", big)})
            record = instance_record(
                study.uid, series_uid(study.number, 1), sop_uid(study.number, 1, 1), metadata
            )
            db.upsert(record, metadata)

        request = parse_search(STUDY, [("includefield", "all"), ("limit", "11")])
        first = db.search(request)
        assert 0 < len(first.results) < 11
        assert first.next_offset == len(first.results)
        assert first.more_available  # a twelfth study lies beyond the window
        assert sum(len(orjson.dumps(result)) for result in first.results) <= PAGE_BYTES

        seen = list(first.results)
        reply = first
        while reply.next_offset is not None:
            reply = db.search(
                request.model_copy(
                    update={"offset": reply.next_offset, "limit": 11 - reply.next_offset}
                )
            )
            seen.extend(reply.results)
        assert len(seen) == 11
        ordered = db.search(parse_search(STUDY, [("limit", "11")]))
        assert [value(r, 0x0020000D) for r in seen] == uids(ordered, 0x0020000D)

        huge = parse_search(STUDY, [("includefield", "all"), ("limit", "1")])
        assert len(db.search(huge).results) == 1  # one result always fits


def test_reupsert_is_idempotent(index: SqliteIndex) -> None:
    before = [search(index, level, [("includefield", "all")]) for level in QueryLevel]
    record, metadata = all_instances()[0]
    assert index.upsert(record, metadata).replaced is True
    assert index.upsert(record, metadata).replaced is True
    after = [search(index, level, [("includefield", "all")]) for level in QueryLevel]
    assert after == before


def test_latest_instance_wins_for_study_attributes(index: SqliteIndex) -> None:
    record, metadata = all_instances()[0]
    renamed = {**metadata, "00100010": element("PN", {"Alphabetic": "Müller^Jürgen^Karl"})}
    index.upsert(record, renamed)
    assert uids(search(index, STUDY, [("PatientName", "Müller^Jürgen^Karl")]), 0x0020000D) == [S1]
    assert search(index, STUDY, [("PatientName", "Müller^Jürgen")]).results == []


def test_moving_an_instance_cleans_up_empty_series_and_studies(tmp_path: Path) -> None:
    lone = SyntheticStudy(9, {"Alphabetic": "Öberg^Li"}, "P9", "A9", "20220202", ("CT", "MR"))
    target = STUDIES[0]
    with SqliteIndex(tmp_path / "move.sqlite") as db:
        for record, metadata in all_instances():
            db.upsert(record, metadata)
        metadata = instance_metadata(lone, 1, 1)
        moving = instance_record(lone.uid, series_uid(9, 1), sop_uid(9, 1, 1), metadata)
        db.upsert(moving, metadata)
        assert len(search(db, STUDY).results) == 4

        # The same SOP Instance UID re-stored under study 1, series 2.
        moved_metadata = instance_metadata(target, 2, 4)
        moved = moving.model_copy(update={"study_uid": target.uid, "series_uid": series_uid(1, 2)})
        assert db.upsert(moved, moved_metadata).replaced is True

        assert uids(search(db, STUDY), 0x0020000D) == [S1, S2, S3]
        assert search(db, SERIES, [("SeriesInstanceUID", series_uid(9, 1))]).results == []
        (series,) = search(db, SERIES, [("SeriesInstanceUID", series_uid(1, 2))]).results
        assert value(series, 0x00201209) == 4
        (study,) = search(db, STUDY, [("StudyInstanceUID", S1)]).results
        assert value(study, 0x00201208) == 7
        located = db.locate(LocateRequest(study_uid=S1, series_uid=series_uid(1, 2)))
        assert [i.sop_uid for i in located.instances][-1] == sop_uid(9, 1, 1)

        # Moving one instance out of a series with others leaves that series in place.
        record, metadata = all_instances()[0]  # study 1, series 1, instance 1
        db.upsert(record.model_copy(update={"series_uid": series_uid(1, 2)}), metadata)
        counts = {
            value(r, 0x0020000E): value(r, 0x00201209)
            for r in search(db, SERIES, study_uid=S1).results
        }
        assert counts == {series_uid(1, 1): 2, series_uid(1, 2): 5}


def test_series_restored_under_another_study_takes_its_instances(tmp_path: Path) -> None:
    with SqliteIndex(tmp_path / "series.sqlite") as db:
        for record, metadata in all_instances():
            db.upsert(record, metadata)
        # Study 3 keeps series 3.2 only after series 3.1 moves to study 2.
        record, metadata = all_instances()[12]
        assert record.series_uid == series_uid(3, 1)
        db.upsert(record.model_copy(update={"study_uid": S2}), metadata)
        located = db.locate(LocateRequest(study_uid=S2, series_uid=series_uid(3, 1)))
        assert len(located.instances) == 3
        assert {i.study_uid for i in located.instances} == {S2}
        (study,) = search(db, STUDY, [("StudyInstanceUID", S3)]).results
        assert value(study, 0x00201206) == 1
        assert value(study, 0x00201208) == 3


def test_contains_and_metadata(index: SqliteIndex) -> None:
    sop = sop_uid(2, 1, 1)
    assert index.contains(sop, "ab" * 32)
    assert not index.contains(sop, "cd" * 32)
    assert not index.contains(f"{ROOT}.404", "ab" * 32)
    stored = index.instance_metadata(sop)
    assert stored is not None
    dataset = orjson.loads(stored)
    assert dataset["7FE00010"]["BulkDataURI"].endswith("/bulk/7FE00010")  # kept for WADO
    assert value(dataset, 0x00100010)["Ideographic"] == "山田^太郎"
    assert index.instance_metadata(f"{ROOT}.404") is None


def test_locate_orders_and_pages(index: SqliteIndex) -> None:
    expected = [sop_uid(2, s, k) for s in (1, 2) for k in (1, 2, 3)]
    whole = index.locate(LocateRequest(study_uid=S2))
    assert [i.sop_uid for i in whole.instances] == expected
    assert whole.next_offset is None
    first = whole.instances[0]
    assert first.object_key == f"objects/{expected[0]}.dcm"
    assert first.sop_class_uid == SOP_CLASSES["MR"]
    assert first.size == 1234

    page = index.locate(LocateRequest(study_uid=S2, limit=4))
    assert [i.sop_uid for i in page.instances] == expected[:4]
    assert page.next_offset == 4
    rest = index.locate(LocateRequest(study_uid=S2, limit=4, offset=4))
    assert [i.sop_uid for i in rest.instances] == expected[4:]
    assert rest.next_offset is None

    series = index.locate(LocateRequest(study_uid=S2, series_uid=series_uid(2, 2)))
    assert [i.sop_uid for i in series.instances] == expected[3:]
    one = index.locate(
        LocateRequest(study_uid=S2, series_uid=series_uid(2, 2), sop_uid=expected[4])
    )
    assert [i.sop_uid for i in one.instances] == [expected[4]]
    wrong_study = LocateRequest(study_uid=S1, series_uid=series_uid(2, 2))
    assert index.locate(wrong_study).instances == []


def test_index_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "reopen.sqlite"
    with SqliteIndex(path) as db:
        for record, metadata in all_instances()[:3]:
            db.upsert(record, metadata)
    with SqliteIndex(path) as db:
        assert len(search(db, INSTANCE).results) == 3
        assert db.ping()


def test_concurrent_use_from_threads(tmp_path: Path) -> None:
    items = all_instances()
    with SqliteIndex(tmp_path / "threads.sqlite") as db, ThreadPoolExecutor(8) as pool:
        writes = [pool.submit(db.upsert, record, metadata) for record, metadata in items]
        reads = [pool.submit(search, db, level) for level in QueryLevel for _ in range(5)]
        assert all(future.result().replaced is False for future in writes)
        for future in reads:
            future.result()
        assert len(search(db, INSTANCE).results) == len(items)
