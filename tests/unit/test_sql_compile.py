"""``SearchRequest`` compiled to parameterised SQL: golden statements and parameters."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

import pytest

from tessera_common.messages import AttributeMatch, LocateRequest, QueryLevel, SearchRequest
from tessera_common.qido import parse_search
from tessera_query.sql import SCHEMA, compile_locate, compile_search

STUDY, SERIES, INSTANCE = QueryLevel.STUDY, QueryLevel.SERIES, QueryLevel.INSTANCE

STUDY_ORDER = " ORDER BY s.study_date DESC NULLS LAST, s.study_uid LIMIT ? OFFSET ?"
SERIES_ORDER = " ORDER BY se.study_uid, se.series_number NULLS LAST, se.series_uid LIMIT ? OFFSET ?"
INSTANCE_FROM = (
    "SELECT i.study_uid, i.series_uid, i.sop_uid FROM instances AS i"
    " JOIN series AS se ON se.series_uid = i.series_uid"
)
INSTANCE_ORDER = (
    " ORDER BY i.study_uid, se.series_number NULLS LAST, i.series_uid,"
    " i.instance_number NULLS LAST, i.sop_uid LIMIT ? OFFSET ?"
)


@dataclass(frozen=True)
class GoldenCase:
    id: str
    level: QueryLevel
    params: list[tuple[str, str]]
    sql: str
    values: list[object]
    study_uid: str | None = None
    series_uid: str | None = None


GOLDEN = [
    GoldenCase(
        "all studies",
        STUDY,
        [],
        "SELECT s.study_uid FROM studies AS s" + STUDY_ORDER,
        [1001, 0],
    ),
    GoldenCase(
        "study keys, universal matching adds no condition",
        STUDY,
        [("PatientID", "P-1"), ("PatientName", ""), ("StudyDate", "20240102"), ("limit", "10")],
        "SELECT s.study_uid FROM studies AS s WHERE s.patient_id = ? AND s.study_date = ?"
        + STUDY_ORDER,
        ["P-1", "20240102", 11, 0],
    ),
    GoldenCase(
        "modalities in study is any series' modality",
        STUDY,
        [("ModalitiesInStudy", "MR"), ("offset", "5")],
        "SELECT s.study_uid FROM studies AS s WHERE EXISTS (SELECT 1 FROM series AS r1"
        " WHERE r1.study_uid = s.study_uid AND r1.modality = ?)" + STUDY_ORDER,
        ["MR", 1001, 5],
    ),
    GoldenCase(
        "study UID list",
        STUDY,
        [("StudyInstanceUID", "1.2.3,1.2.4")],
        "SELECT s.study_uid FROM studies AS s WHERE s.study_uid IN (?, ?)" + STUDY_ORDER,
        ["1.2.3", "1.2.4", 1001, 0],
    ),
    GoldenCase(
        "series of a study, no join",
        SERIES,
        [("Modality", "CT"), ("SeriesNumber", "3")],
        "SELECT se.study_uid, se.series_uid FROM series AS se"
        " WHERE se.study_uid = ? AND se.modality = ? AND se.series_number = ?" + SERIES_ORDER,
        ["1.2.3", "CT", 3, 1001, 0],
        study_uid="1.2.3",
    ),
    GoldenCase(
        "all series with a relational study key joins studies",
        SERIES,
        [("PatientName", "Müller^Jürgen"), ("StudyInstanceUID", "1.2.3")],
        "SELECT se.study_uid, se.series_uid FROM series AS se"
        " JOIN studies AS s ON s.study_uid = se.study_uid"
        " WHERE (s.patient_name = ? OR s.patient_name_i = ? OR s.patient_name_p = ?)"
        " AND se.study_uid = ?" + SERIES_ORDER,
        ["müller^jürgen"] * 3 + ["1.2.3", 1001, 0],
    ),
    GoldenCase(
        "instances of a series",
        INSTANCE,
        [("SOPInstanceUID", "1.2.3.1.1\\1.2.3.1.2"), ("InstanceNumber", "2")],
        INSTANCE_FROM + " WHERE i.study_uid = ? AND i.series_uid = ?"
        " AND i.sop_uid IN (?, ?) AND i.instance_number = ?" + INSTANCE_ORDER,
        ["1.2.3", "1.2.3.1", "1.2.3.1.1", "1.2.3.1.2", 2, 1001, 0],
        study_uid="1.2.3",
        series_uid="1.2.3.1",
    ),
    GoldenCase(
        "all instances by study and series keys",
        INSTANCE,
        [
            ("AccessionNumber", "A-7"),
            ("Modality", "US"),
            ("SOPClassUID", "1.2.840.10008.5.1.4.1.1.6.1"),
        ],
        INSTANCE_FROM + " JOIN studies AS s ON s.study_uid = i.study_uid"
        " WHERE s.accession_number = ? AND se.modality = ? AND i.sop_class_uid = ?"
        + INSTANCE_ORDER,
        ["A-7", "US", "1.2.840.10008.5.1.4.1.1.6.1", 1001, 0],
    ),
    GoldenCase(
        "modalities in study at instance level",
        INSTANCE,
        [("ModalitiesInStudy", "SR")],
        INSTANCE_FROM + " WHERE EXISTS (SELECT 1 FROM series AS r1"
        " WHERE r1.study_uid = i.study_uid AND r1.modality = ?)" + INSTANCE_ORDER,
        ["SR", 1001, 0],
    ),
    GoldenCase(
        "wildcard is GLOB with [ escaped; any attribute is read from the match document",
        STUDY,
        [("StudyDescription", "Head [*")],
        "SELECT s.study_uid FROM studies AS s WHERE EXISTS (SELECT 1 FROM"
        " json_each(s.keys, ?) AS j1 WHERE j1.value GLOB ?)" + STUDY_ORDER,
        ['$."00081030"', "Head [[]*", 1001, 0],
    ),
    GoldenCase(
        "range on an indexed column, person names folded",
        STUDY,
        [("StudyDate", "20240101-20240131"), ("PatientName", "DOE*")],
        "SELECT s.study_uid FROM studies AS s WHERE (s.study_date >= ? AND s.study_date <= ?)"
        " AND (s.patient_name GLOB ? OR s.patient_name_i GLOB ? OR s.patient_name_p GLOB ?)"
        + STUDY_ORDER,
        ["20240101", "20240131", "doe*", "doe*", "doe*", 1001, 0],
    ),
    GoldenCase(
        "zone-adjusted date: UTC where known, else local",
        STUDY,
        [("StudyDate", "20240101"), ("TimezoneOffsetFromUTC", "+0100")],
        "SELECT s.study_uid FROM studies AS s WHERE ((s.study_instant >= ? AND"
        " s.study_instant <= ?) OR ((s.study_instant IS NULL) AND s.study_date = ?))" + STUDY_ORDER,
        ["20231231230000.000000", "20240101225959.999999", "20240101", 1001, 0],
    ),
    GoldenCase(
        "fuzzy person name: word prefixes in the words column",
        STUDY,
        [("PatientName", "jo do"), ("fuzzymatching", "true")],
        "SELECT s.study_uid FROM studies AS s WHERE (s.patient_words GLOB ?"
        " AND s.patient_words GLOB ?)" + STUDY_ORDER,
        ["* jo*", "* do*", 1001, 0],
    ),
    GoldenCase(
        "empty value and emptyvaluematching",
        SERIES,
        [("SeriesNumber", '""'), ("BodyPartExamined", "HEAD"), ("emptyvaluematching", "true")],
        "SELECT se.study_uid, se.series_uid FROM series AS se WHERE (se.series_number IS NULL)"
        " AND (EXISTS (SELECT 1 FROM json_each(se.keys, ?) AS j1 WHERE j1.value = ?)"
        " OR COALESCE(json_array_length(se.keys, ?), 0) = 0)" + SERIES_ORDER,
        ['$."00180015"', "HEAD", '$."00180015"', 1001, 0],
    ),
    GoldenCase(
        "sequence item matching all its keys",
        SERIES,
        [("00400275.00400009", "S1"), ("00400275.00401001", "R1")],
        "SELECT se.study_uid, se.series_uid FROM series AS se WHERE EXISTS (SELECT 1 FROM"
        " json_each(se.keys, ?) AS it1 WHERE EXISTS (SELECT 1 FROM json_each(it1.value, ?)"
        " AS j2 WHERE j2.value = ?) AND EXISTS (SELECT 1 FROM json_each(it1.value, ?) AS j3"
        " WHERE j3.value = ?))" + SERIES_ORDER,
        ['$."00400275"', '$."00400009"', "S1", '$."00401001"', "R1", 1001, 0],
    ),
]


@pytest.mark.parametrize("case", GOLDEN, ids=lambda case: case.id)
def test_compile_search_golden(case: GoldenCase) -> None:
    request = parse_search(
        case.level, case.params, study_uid=case.study_uid, series_uid=case.series_uid
    )
    sql, values = compile_search(request)
    assert sql == case.sql
    assert values == case.values
    assert sql.count("?") == len(values)


@pytest.fixture(scope="module")
def schema_db() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    for statement in SCHEMA:
        db.execute(statement)
    return db


@pytest.mark.parametrize("case", GOLDEN, ids=lambda case: case.id)
def test_compiled_sql_runs_against_the_schema(
    case: GoldenCase, schema_db: sqlite3.Connection
) -> None:
    request = parse_search(
        case.level, case.params, study_uid=case.study_uid, series_uid=case.series_uid
    )
    assert schema_db.execute(*compile_search(request)).fetchall() == []


def test_every_reference_query_compiles_and_runs(schema_db: sqlite3.Connection) -> None:
    """Placeholders aside, every row of the reference table is valid SQL on the schema with as
    many parameters as marks."""
    from tests.support.qido_corpus import corpus
    from tests.support.qido_reference import CASES

    for case in CASES:
        sql, values = compile_search(case.request(corpus()))
        assert sql.count("?") == len(values), case.id
        schema_db.execute(sql, values).fetchall()


INJECTIONS = [
    "x' OR '1'='1",
    "'; DROP TABLE studies; --",
    'P" UNION SELECT sql FROM sqlite_master --',
]


@pytest.mark.parametrize("value", INJECTIONS)
def test_hostile_value_stays_a_parameter(value: str, schema_db: sqlite3.Connection) -> None:
    request = SearchRequest(
        level=STUDY, matches=[AttributeMatch(tag=0x00100020, value=value)], limit=10
    )
    sql, values = compile_search(request)
    assert value not in sql
    assert "'" not in sql and '"' not in sql and "--" not in sql
    assert values == [value, 11, 0]
    assert schema_db.execute(sql, values).fetchall() == []
    assert schema_db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] > 0


def test_series_uid_cannot_scope_a_study_query() -> None:
    with pytest.raises(ValueError, match="series UID"):
        compile_search(SearchRequest(level=STUDY, series_uid="1.2.3", limit=1))


LOCATE_ORDER = (
    " ORDER BY se.series_number NULLS LAST, i.series_uid, i.instance_number NULLS LAST,"
    " i.sop_uid LIMIT ? OFFSET ?"
)
LOCATE_FROM = (
    "SELECT i.study_uid, i.series_uid, i.sop_uid, i.sop_class_uid, i.transfer_syntax_uid,"
    " i.object_key, i.sidecar_key, i.size, i.sha256 FROM instances AS i"
    " JOIN series AS se ON se.series_uid = i.series_uid"
)


@pytest.mark.parametrize(
    ("request_", "sql", "values"),
    [
        pytest.param(
            LocateRequest(study_uid="1.2.3"),
            LOCATE_FROM + " WHERE i.study_uid = ?" + LOCATE_ORDER,
            ["1.2.3", 101, 0],
            id="study",
        ),
        pytest.param(
            LocateRequest(study_uid="1.2.3", series_uid="1.2.3.1", offset=100),
            LOCATE_FROM + " WHERE i.study_uid = ? AND i.series_uid = ?" + LOCATE_ORDER,
            ["1.2.3", "1.2.3.1", 101, 100],
            id="series",
        ),
        pytest.param(
            LocateRequest(study_uid="1.2.3", series_uid="1.2.3.1", sop_uid="1.2.3.1.1"),
            LOCATE_FROM
            + " WHERE i.study_uid = ? AND i.series_uid = ? AND i.sop_uid = ?"
            + LOCATE_ORDER,
            ["1.2.3", "1.2.3.1", "1.2.3.1.1", 101, 0],
            id="instance",
        ),
    ],
)
def test_compile_locate(
    request_: LocateRequest, sql: str, values: list[object], schema_db: sqlite3.Connection
) -> None:
    assert compile_locate(request_, limit=100) == (sql, values)
    assert schema_db.execute(sql, values).fetchall() == []
