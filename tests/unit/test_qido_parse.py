"""QIDO-RS query parameters (PS3.18 §8.3.4, §10.6.1) parsed into a ``SearchRequest``."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from tessera_common.errors import ErrorCode, TesseraError
from tessera_common.messages import AttributeMatch, QueryLevel, SearchRequest
from tessera_common.qido import (
    INSTANCE_RETURN_ATTRIBUTES,
    MATCHING_KEY_LEVELS,
    RELATIONAL_STUDY_ATTRIBUTES,
    SERIES_RETURN_ATTRIBUTES,
    STUDY_RETURN_ATTRIBUTES,
    parse_search,
)

STUDY, SERIES, INSTANCE = QueryLevel.STUDY, QueryLevel.SERIES, QueryLevel.INSTANCE
STUDY_UID = "1.2.826.0.1.3680043.8.498.1"
SERIES_UID = "1.2.826.0.1.3680043.8.498.1.1"

PATIENT_ID = 0x00100020
PATIENT_NAME = 0x00100010
STUDY_INSTANCE_UID = 0x0020000D
MODALITY = 0x00080060


@dataclass(frozen=True)
class ParseCase:
    id: str
    level: QueryLevel
    params: list[tuple[str, str]]
    matches: list[AttributeMatch] = field(default_factory=list)
    include_fields: list[int] = field(default_factory=list)
    include_all: bool = False
    limit: int = 1000
    offset: int = 0
    study_uid: str | None = None
    series_uid: str | None = None


def single(tag: int, value: str) -> AttributeMatch:
    return AttributeMatch(tag=tag, value=value, kind="single")


VALID = [
    ParseCase("no parameters gives the defaults", STUDY, []),
    ParseCase(
        "key by keyword",
        STUDY,
        [("PatientID", "P-1")],
        [single(PATIENT_ID, "P-1")],
        [PATIENT_ID],
    ),
    ParseCase(
        "key by upper-case tag",
        STUDY,
        [("00100020", "P-1")],
        [single(PATIENT_ID, "P-1")],
        [PATIENT_ID],
    ),
    ParseCase(
        "key by lower-case hex tag",
        STUDY,
        [("0020000d", STUDY_UID)],
        [single(STUDY_INSTANCE_UID, STUDY_UID)],
        [STUDY_INSTANCE_UID],
    ),
    ParseCase(
        "empty value is universal matching and returns the attribute",
        STUDY,
        [("PatientName", "")],
        [AttributeMatch(tag=PATIENT_NAME, value="", kind="universal")],
        [PATIENT_NAME],
    ),
    ParseCase(
        "surrounding spaces are not significant",
        SERIES,
        [("Modality", " CT  ")],
        [single(MODALITY, "CT")],
        [MODALITY],
    ),
    ParseCase(
        "non-ASCII person name",
        STUDY,
        [("PatientName", "Müller^Jürgen")],
        [single(PATIENT_NAME, "Müller^Jürgen")],
        [PATIENT_NAME],
    ),
    ParseCase(
        "UID list separated by commas",
        STUDY,
        [("StudyInstanceUID", "1.2.3,1.2.4")],
        [AttributeMatch(tag=STUDY_INSTANCE_UID, value="1.2.3\\1.2.4", kind="uid_list")],
        [STUDY_INSTANCE_UID],
    ),
    ParseCase(
        "UID list separated by backslashes, duplicates dropped",
        INSTANCE,
        [("SOPInstanceUID", "1.2.3\\1.2.4\\1.2.3")],
        [AttributeMatch(tag=0x00080018, value="1.2.3\\1.2.4", kind="uid_list")],
        [0x00080018],
    ),
    ParseCase(
        "a list of one UID is single value matching",
        SERIES,
        [("SeriesInstanceUID", "1.2.3,1.2.3")],
        [single(0x0020000E, "1.2.3")],
        [0x0020000E],
    ),
    ParseCase(
        "integer key normalised",
        INSTANCE,
        [("InstanceNumber", "+007")],
        [single(0x00200013, "7")],
        [0x00200013],
    ),
    ParseCase(
        "date key",
        STUDY,
        [("StudyDate", "20240229")],
        [single(0x00080020, "20240229")],
        [0x00080020],
    ),
    ParseCase(
        "ModalitiesInStudy at study level",
        STUDY,
        [("ModalitiesInStudy", "MR")],
        [single(0x00080061, "MR")],
        [0x00080061],
    ),
    ParseCase(
        "study key at series level is relational",
        SERIES,
        [("PatientID", "P-1"), ("Modality", "CT")],
        [single(PATIENT_ID, "P-1"), single(MODALITY, "CT")],
        [PATIENT_ID, MODALITY],
    ),
    ParseCase(
        "study and series keys at instance level",
        INSTANCE,
        [
            ("AccessionNumber", "A1"),
            ("SeriesNumber", "2"),
            ("SOPClassUID", "1.2.840.10008.5.1.4.1.1.2"),
        ],
        [
            single(0x00080050, "A1"),
            single(0x00200011, "2"),
            single(0x00080016, "1.2.840.10008.5.1.4.1.1.2"),
        ],
        [0x00080050, 0x00200011, 0x00080016],
    ),
    ParseCase(
        "includefield repeated and comma separated, by keyword and tag, deduplicated",
        STUDY,
        [("includefield", "StudyDescription,00081030"), ("includefield", "00180015")],
        include_fields=[0x00081030, 0x00180015],
    ),
    ParseCase(
        "includefield=all",
        SERIES,
        [("includefield", "all")],
        include_all=True,
    ),
    ParseCase(
        "includefield of a sequence path includes the sequence",
        SERIES,
        [("includefield", "RequestAttributesSequence.ScheduledProcedureStepID")],
        include_fields=[0x00400275],
    ),
    ParseCase("limit and offset", STUDY, [("limit", "25"), ("offset", "50")], limit=25, offset=50),
    ParseCase("limit zero", STUDY, [("limit", "0")], limit=0),
    ParseCase("limit capped at the maximum", STUDY, [("limit", "999999")], limit=10000),
    ParseCase(
        "fuzzymatching and emptyvaluematching accepted",
        STUDY,
        [("fuzzymatching", "true"), ("emptyvaluematching", "FALSE")],
    ),
    ParseCase(
        "cache busters and transport parameters ignored",
        STUDY,
        [("_", "1712345678"), ("_dc", "x"), ("accept", "application/dicom+json")],
    ),
    ParseCase(
        "study in the path",
        SERIES,
        [("Modality", "CT")],
        [single(MODALITY, "CT")],
        [MODALITY],
        study_uid=STUDY_UID,
    ),
    ParseCase(
        "study and series in the path",
        INSTANCE,
        [],
        study_uid=STUDY_UID,
        series_uid=SERIES_UID,
    ),
]


@pytest.mark.parametrize("case", VALID, ids=lambda case: case.id)
def test_parse_valid(case: ParseCase) -> None:
    parsed = parse_search(
        case.level, case.params, study_uid=case.study_uid, series_uid=case.series_uid
    )
    assert parsed == SearchRequest(
        level=case.level,
        study_uid=case.study_uid,
        series_uid=case.series_uid,
        matches=case.matches,
        include_fields=case.include_fields,
        include_all=case.include_all,
        limit=case.limit,
        offset=case.offset,
    )


@dataclass(frozen=True)
class BadCase:
    id: str
    level: QueryLevel
    params: list[tuple[str, str]]
    code: ErrorCode
    reason: str  # a fragment the reason must contain
    study_uid: str | None = None
    series_uid: str | None = None


INVALID = [
    BadCase(
        "unknown keyword", STUDY, [("PatientNmae", "x")], ErrorCode.INVALID_QUERY, "PatientNmae"
    ),
    BadCase("unknown private tag", STUDY, [("00091010", "x")], ErrorCode.INVALID_QUERY, "00091010"),
    BadCase(
        "keyword is case sensitive",
        STUDY,
        [("patientid", "x")],
        ErrorCode.INVALID_QUERY,
        "patientid",
    ),
    BadCase(
        "key repeated",
        STUDY,
        [("PatientID", "a"), ("PatientID", "b")],
        ErrorCode.INVALID_QUERY,
        "more than once",
    ),
    BadCase(
        "key repeated as keyword and tag",
        STUDY,
        [("PatientID", "a"), ("00100020", "a")],
        ErrorCode.INVALID_QUERY,
        "PatientID given more than once",
    ),
    BadCase("negative limit", STUDY, [("limit", "-1")], ErrorCode.INVALID_QUERY, "limit"),
    BadCase("non-numeric limit", STUDY, [("limit", "ten")], ErrorCode.INVALID_QUERY, "limit"),
    BadCase("empty limit", STUDY, [("limit", "")], ErrorCode.INVALID_QUERY, "limit"),
    BadCase("unicode digit limit", STUDY, [("limit", "²")], ErrorCode.INVALID_QUERY, "limit"),
    BadCase(
        "limit repeated",
        STUDY,
        [("limit", "1"), ("limit", "2")],
        ErrorCode.INVALID_QUERY,
        "limit given more than once",
    ),
    BadCase("fractional offset", STUDY, [("offset", "1.5")], ErrorCode.INVALID_QUERY, "offset"),
    BadCase(
        "offset beyond any result", STUDY, [("offset", "9" * 30)], ErrorCode.INVALID_QUERY, "offset"
    ),
    BadCase(
        "instance key at study level",
        STUDY,
        [("SOPInstanceUID", "1.2.3")],
        ErrorCode.INVALID_QUERY,
        "SOPInstanceUID",
    ),
    BadCase(
        "series key at study level",
        STUDY,
        [("Modality", "CT")],
        ErrorCode.INVALID_QUERY,
        "Modality",
    ),
    BadCase(
        "instance key at series level",
        SERIES,
        [("InstanceNumber", "1")],
        ErrorCode.INVALID_QUERY,
        "not a series level key",
    ),
    BadCase(
        "known attribute not matchable yet",
        STUDY,
        [("StudyDescription", "CHEST")],
        ErrorCode.INVALID_QUERY,
        "StudyDescription is not supported yet",
    ),
    BadCase(
        "wildcard not supported yet",
        STUDY,
        [("PatientName", "Doe*")],
        ErrorCode.INVALID_QUERY,
        "wildcard matching is not supported yet",
    ),
    BadCase(
        "range not supported yet",
        STUDY,
        [("StudyDate", "20200101-20201231")],
        ErrorCode.INVALID_QUERY,
        "range matching is not supported yet",
    ),
    BadCase(
        "multiple values not supported yet",
        STUDY,
        [("PatientID", "a\\b")],
        ErrorCode.INVALID_QUERY,
        "multiple values",
    ),
    BadCase(
        "sequence matching path not supported yet",
        SERIES,
        [("00400275.00400009", "X")],
        ErrorCode.INVALID_QUERY,
        "not supported yet",
    ),
    BadCase("impossible date", STUDY, [("StudyDate", "20241345")], ErrorCode.INVALID_QUERY, "date"),
    BadCase("short date", STUDY, [("StudyDate", "2024")], ErrorCode.INVALID_QUERY, "date"),
    BadCase(
        "non-integer number", SERIES, [("SeriesNumber", "two")], ErrorCode.INVALID_QUERY, "integer"
    ),
    BadCase(
        "invalid UID",
        STUDY,
        [("StudyInstanceUID", "1.2.abc")],
        ErrorCode.INVALID_UID,
        "StudyInstanceUID",
    ),
    BadCase(
        "empty UID in a list",
        STUDY,
        [("StudyInstanceUID", "1.2.3,,1.2.4")],
        ErrorCode.INVALID_UID,
        "StudyInstanceUID",
    ),
    BadCase(
        "SQL in a UID",
        INSTANCE,
        [("SOPInstanceUID", "1.2'); DROP TABLE instances;--")],
        ErrorCode.INVALID_UID,
        "SOPInstanceUID",
    ),
    BadCase(
        "too many UIDs",
        STUDY,
        [("StudyInstanceUID", ",".join(["1.2.3"] * 1001))],
        ErrorCode.INVALID_QUERY,
        "at most 1000",
    ),
    BadCase(
        "over-long value", STUDY, [("PatientID", "x" * 2000)], ErrorCode.INVALID_QUERY, "too long"
    ),
    BadCase(
        "fuzzymatching not boolean",
        STUDY,
        [("fuzzymatching", "maybe")],
        ErrorCode.INVALID_QUERY,
        "fuzzymatching",
    ),
    BadCase(
        "includefield unknown", STUDY, [("includefield", "Nope")], ErrorCode.INVALID_QUERY, "Nope"
    ),
    BadCase(
        "includefield empty item",
        STUDY,
        [("includefield", "PatientID,")],
        ErrorCode.INVALID_QUERY,
        "includefield",
    ),
    BadCase(
        "bad study UID in the path",
        SERIES,
        [],
        ErrorCode.INVALID_UID,
        "Study Instance UID",
        study_uid="1..2",
    ),
    BadCase(
        "series in the path without a study",
        INSTANCE,
        [],
        ErrorCode.INVALID_QUERY,
        "series in the path",
        series_uid=SERIES_UID,
    ),
    BadCase(
        "series in the path at series level",
        SERIES,
        [],
        ErrorCode.INVALID_QUERY,
        "series in the path",
        study_uid=STUDY_UID,
        series_uid=SERIES_UID,
    ),
    BadCase(
        "study in the path at study level",
        STUDY,
        [],
        ErrorCode.INVALID_QUERY,
        "study-level",
        study_uid=STUDY_UID,
    ),
]


@pytest.mark.parametrize("case", INVALID, ids=lambda case: case.id)
def test_parse_invalid(case: BadCase) -> None:
    with pytest.raises(TesseraError) as caught:
        parse_search(case.level, case.params, study_uid=case.study_uid, series_uid=case.series_uid)
    assert caught.value.code is case.code
    assert case.reason in caught.value.reason


def test_default_limit_is_capped_by_max_limit() -> None:
    assert parse_search(STUDY, [], default_limit=50, max_limit=20).limit == 20
    assert parse_search(STUDY, [("limit", "30")], default_limit=5, max_limit=100).limit == 30


@pytest.mark.parametrize(
    ("table", "count"),
    [
        (STUDY_RETURN_ATTRIBUTES, 17),  # PS3.18 Table 10.6.3-3
        (SERIES_RETURN_ATTRIBUTES, 11),  # Table 10.6.3-4
        (INSTANCE_RETURN_ATTRIBUTES, 11),  # Table 10.6.3-5
    ],
    ids=["study", "series", "instance"],
)
def test_return_attribute_tables(table: frozenset[int], count: int) -> None:
    assert len(table) == count
    assert 0x00081190 in table  # RetrieveURL at every level


def test_relational_study_attributes_are_stored_study_attributes() -> None:
    assert STUDY_INSTANCE_UID in RELATIONAL_STUDY_ATTRIBUTES
    assert 0x00201206 not in RELATIONAL_STUDY_ATTRIBUTES  # a count describes the study only
    assert RELATIONAL_STUDY_ATTRIBUTES < STUDY_RETURN_ATTRIBUTES


def test_every_matching_key_is_returned_at_its_level() -> None:
    returned = {
        STUDY: STUDY_RETURN_ATTRIBUTES,
        SERIES: SERIES_RETURN_ATTRIBUTES,
        INSTANCE: INSTANCE_RETURN_ATTRIBUTES,
    }
    # PatientName etc. are returned by the study tables; the instance-level SOPClassUID etc.
    # by the instance table; Modality by the series table.
    for tag, level in MATCHING_KEY_LEVELS.items():
        assert tag in returned[level], f"{tag:08X}"
