"""QIDO-RS query parameters (PS3.18 §8.3.4, §10.6.1) parsed into a ``SearchRequest``."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from pydicom import datadict

from tessera_common.errors import ErrorCode, TesseraError
from tessera_common.messages import AttributeMatch, MatchTerm, QueryLevel, SearchRequest
from tessera_common.qido import (
    INSTANCE_RETURN_ATTRIBUTES,
    RELATIONAL_STUDY_ATTRIBUTES,
    SERIES_RETURN_ATTRIBUTES,
    STUDY_RETURN_ATTRIBUTES,
    attribute_level,
    parse_search,
)

STUDY, SERIES, INSTANCE = QueryLevel.STUDY, QueryLevel.SERIES, QueryLevel.INSTANCE
STUDY_UID = "1.2.826.0.1.3680043.8.498.1"
SERIES_UID = "1.2.826.0.1.3680043.8.498.1.1"

#: 65 distinct Patient module keywords.
PATIENT_KEYWORDS = sorted(
    str(datadict.keyword_for_tag(tag))
    for tag in range(0x00100010, 0x00102300)
    if datadict.dictionary_has_tag(tag) and datadict.keyword_for_tag(tag)
)
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
    fuzzy: bool = False
    empty_value_matching: bool = False
    timezone_offset: int | None = None


VRS = {
    PATIENT_ID: "LO",
    PATIENT_NAME: "PN",
    STUDY_INSTANCE_UID: "UI",
    MODALITY: "CS",
    0x00080018: "UI",
    0x0020000E: "UI",
    0x00200013: "IS",
    0x00200011: "IS",
    0x00080020: "DA",
    0x00080030: "TM",
    0x00080061: "CS",
    0x00080050: "SH",
    0x00080016: "UI",
    0x0008002A: "DT",
    0x00081030: "LO",
    0x00180050: "DS",
}


def single(
    tag: int, value: str, *, text: str | None = None, number: float | None = None
) -> AttributeMatch:
    if number is None and text is None:
        text = value
    return AttributeMatch(
        tag=tag,
        value=value,
        kind="single",
        vr=VRS[tag],
        terms=[MatchTerm(kind="single", text=text, number=number)],
    )


def date_range(
    tag: int, value: str, low: str | None, high: str | None, **zone: object
) -> AttributeMatch:
    term = MatchTerm(kind="range", low=low, high=high, **zone)  # type: ignore[arg-type]
    return AttributeMatch(tag=tag, value=value, kind="range", vr=VRS[tag], terms=[term])


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
        [AttributeMatch(tag=PATIENT_NAME, value="", kind="universal", vr="PN")],
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
        [single(PATIENT_NAME, "Müller^Jürgen", text="müller^jürgen")],
        [PATIENT_NAME],
    ),
    ParseCase(
        "UID list separated by commas",
        STUDY,
        [("StudyInstanceUID", "1.2.3,1.2.4")],
        [AttributeMatch(tag=STUDY_INSTANCE_UID, value="1.2.3\\1.2.4", kind="uid_list", vr="UI")],
        [STUDY_INSTANCE_UID],
    ),
    ParseCase(
        "UID list separated by backslashes, duplicates dropped",
        INSTANCE,
        [("SOPInstanceUID", "1.2.3\\1.2.4\\1.2.3")],
        [AttributeMatch(tag=0x00080018, value="1.2.3\\1.2.4", kind="uid_list", vr="UI")],
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
        [single(0x00200013, "+007", number=7)],
        [0x00200013],
    ),
    ParseCase(
        "date key",
        STUDY,
        [("StudyDate", "20240229")],
        [date_range(0x00080020, "20240229", "20240229", "20240229")],
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
            single(0x00200011, "2", number=2),
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
        fuzzy=True,
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
        "wildcard on a person name is folded",
        STUDY,
        [("PatientName", "MÜLLER*")],
        [
            AttributeMatch(
                tag=PATIENT_NAME,
                value="MÜLLER*",
                kind="wildcard",
                vr="PN",
                terms=[MatchTerm(kind="wildcard", text="müller*")],
            )
        ],
        [PATIENT_NAME],
    ),
    ParseCase(
        "open range",
        STUDY,
        [("StudyDate", "20240101-")],
        [date_range(0x00080020, "20240101-", "20240101", None)],
        [0x00080020],
    ),
    ParseCase(
        "time precision becomes a range",
        STUDY,
        [("StudyTime", "10")],
        [date_range(0x00080030, "10", "100000.000000", "105959.999999")],
        [0x00080030],
    ),
    ParseCase(
        "TimezoneOffsetFromUTC zones dates, not times",
        STUDY,
        [("StudyDate", "20240105"), ("TimezoneOffsetFromUTC", "+0900"), ("StudyTime", "-10")],
        [
            date_range(
                0x00080020,
                "20240105",
                "20240105",
                "20240105",
                zoned=True,
                utc_low="20240104150000.000000",
                utc_high="20240105145959.999999",
            ),
            date_range(0x00080030, "-10", None, "105959.999999"),
        ],
        [0x00080020, 0x00080201, 0x00080030],
        timezone_offset=540,
    ),
    ParseCase(
        "DT with a negative offset is one value",
        INSTANCE,
        [("AcquisitionDateTime", "20240101120000-0500")],
        [
            date_range(
                0x0008002A,
                "20240101120000-0500",
                "20240101120000.000000",
                "20240101120000.999999",
                zoned=True,
                utc_low="20240101170000.000000",
                utc_high="20240101170000.999999",
            )
        ],
        [0x0008002A],
    ),
    ParseCase(
        "fuzzy person name",
        STUDY,
        [("fuzzymatching", "true"), ("PatientName", "Núñez JO")],
        [
            AttributeMatch(
                tag=PATIENT_NAME,
                value="Núñez JO",
                kind="fuzzy",
                vr="PN",
                terms=[MatchTerm(kind="fuzzy", tokens=["nunez", "jo"])],
            )
        ],
        [PATIENT_NAME],
        fuzzy=True,
    ),
    ParseCase(
        "empty value matching and emptyvaluematching",
        STUDY,
        [("AccessionNumber", '""'), ("StudyDescription", "X"), ("emptyvaluematching", "true")],
        [
            AttributeMatch(tag=0x00080050, value='""', kind="empty", vr="SH"),
            AttributeMatch(
                tag=0x00081030,
                value="X",
                kind="single",
                vr="LO",
                terms=[MatchTerm(kind="single", text="X")],
                or_empty=True,
            ),
        ],
        [0x00080050, 0x00081030],
        empty_value_matching=True,
    ),
    ParseCase(
        "CS values split on commas and backslashes",
        SERIES,
        [("Modality", "CT,MR\\SR")],
        [
            AttributeMatch(
                tag=MODALITY,
                value="CT,MR\\SR",
                kind="multiple",
                vr="CS",
                terms=[MatchTerm(kind="single", text=m) for m in ("CT", "MR", "SR")],
            )
        ],
        [MODALITY],
    ),
    ParseCase(
        "sequence keys make one item",
        SERIES,
        [
            ("RequestAttributesSequence.ScheduledProcedureStepID", "S1"),
            ("00400275.00401001", "R*"),
            ("00400275", ""),
        ],
        [
            AttributeMatch(
                tag=0x00400275,
                value="",
                kind="sequence",
                vr="SQ",
                items=[
                    AttributeMatch(
                        tag=0x00400009,
                        value="S1",
                        vr="SH",
                        terms=[MatchTerm(kind="single", text="S1")],
                    ),
                    AttributeMatch(
                        tag=0x00401001,
                        value="R*",
                        kind="wildcard",
                        vr="SH",
                        terms=[MatchTerm(kind="wildcard", text="R*")],
                    ),
                ],
            )
        ],
        [0x00400275],
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
        fuzzy=case.fuzzy,
        empty_value_matching=case.empty_value_matching,
        timezone_offset=case.timezone_offset,
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
        "computed count cannot be matched",
        STUDY,
        [("NumberOfStudyRelatedInstances", "3")],
        ErrorCode.INVALID_QUERY,
        "computed by the archive",
    ),
    BadCase(
        "impossible range",
        STUDY,
        [("StudyDate", "20201231-20200101")],
        ErrorCode.INVALID_QUERY,
        "impossible range",
    ),
    BadCase(
        "impossible time range",
        STUDY,
        [("StudyTime", "12-10")],
        ErrorCode.INVALID_QUERY,
        "impossible",
    ),
    BadCase("range without ends", STUDY, [("StudyDate", "-")], ErrorCode.INVALID_QUERY, "range"),
    BadCase(
        "range with two dashes",
        STUDY,
        [("StudyDate", "2020-01-01")],
        ErrorCode.INVALID_QUERY,
        "not a range",
    ),
    BadCase("bad time", STUDY, [("StudyTime", "2561")], ErrorCode.INVALID_QUERY, "time"),
    BadCase(
        "bad date-time",
        INSTANCE,
        [("AcquisitionDateTime", "2024x")],
        ErrorCode.INVALID_QUERY,
        "date-time",
    ),
    BadCase(
        "date-time offset out of range",
        INSTANCE,
        [("AcquisitionDateTime", "20240101+1500")],
        ErrorCode.INVALID_QUERY,
        "AcquisitionDateTime",
    ),
    BadCase(
        "bad TimezoneOffsetFromUTC",
        STUDY,
        [("TimezoneOffsetFromUTC", "CET")],
        ErrorCode.INVALID_QUERY,
        "TimezoneOffsetFromUTC",
    ),
    BadCase(
        "empty value in a list",
        STUDY,
        [("PatientID", "a\\\\b")],
        ErrorCode.INVALID_QUERY,
        "empty value",
    ),
    BadCase(
        "path through a non-sequence",
        SERIES,
        [("Modality.CodeValue", "X")],
        ErrorCode.INVALID_QUERY,
        "not a sequence",
    ),
    BadCase(
        "unknown attribute in a path",
        SERIES,
        [("RequestAttributesSequence.Nope", "X")],
        ErrorCode.INVALID_QUERY,
        "Nope",
    ),
    BadCase(
        "sequence given a value",
        SERIES,
        [("RequestAttributesSequence", "X")],
        ErrorCode.INVALID_QUERY,
        "sequence",
    ),
    BadCase(
        "binary attribute",
        INSTANCE,
        [("PixelData", "x")],
        ErrorCode.INVALID_QUERY,
        "cannot be matched",
    ),
    BadCase(
        "decimal not a number",
        INSTANCE,
        [("SliceThickness", "thin")],
        ErrorCode.INVALID_QUERY,
        "decimal",
    ),
    BadCase(
        "bad attribute tag value",
        INSTANCE,
        [("FrameIncrementPointer", "zz")],
        ErrorCode.INVALID_QUERY,
        "tag",
    ),
    BadCase(
        "instance attribute at study level",
        STUDY,
        [("SliceThickness", "1")],
        ErrorCode.INVALID_QUERY,
        "search /instances",
    ),
    BadCase(
        "PN with four groups",
        STUDY,
        [("PatientName", "a=b=c=d")],
        ErrorCode.INVALID_QUERY,
        "component groups",
    ),
    BadCase(
        "timezone given twice",
        STUDY,
        [("TimezoneOffsetFromUTC", "+0100"), ("00080201", "+0200")],
        ErrorCode.INVALID_QUERY,
        "more than once",
    ),
    BadCase(
        "sequence key repeated",
        SERIES,
        [("00400275.00400009", "A"), ("RequestAttributesSequence.ScheduledProcedureStepID", "B")],
        ErrorCode.INVALID_QUERY,
        "more than once",
    ),
    BadCase(
        "too many keys",
        STUDY,
        [(keyword, "") for keyword in PATIENT_KEYWORDS[:65]],
        ErrorCode.INVALID_QUERY,
        "at most 64",
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


@pytest.mark.parametrize(
    ("keyword", "level"),
    [
        ("PatientName", STUDY),
        ("PatientMotherBirthName", STUDY),  # every Patient module attribute (group 0010)
        ("StudyDescription", STUDY),
        ("ModalitiesInStudy", STUDY),
        ("NumberOfPatientRelatedStudies", STUDY),
        ("Modality", SERIES),
        ("BodyPartExamined", SERIES),
        ("RequestAttributesSequence", SERIES),
        ("SOPInstanceUID", INSTANCE),
        ("SliceThickness", INSTANCE),
        ("ContentSequence", INSTANCE),
    ],
)
def test_attribute_level(keyword: str, level: QueryLevel) -> None:
    assert attribute_level(int(datadict.tag_for_keyword(keyword))) is level
