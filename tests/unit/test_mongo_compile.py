"""``SearchRequest`` compiled to MongoDB filter documents: golden filters and regexes."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tessera_common.messages import QueryLevel, SearchRequest
from tessera_common.qido import parse_search
from tessera_query.mongo import compile_filter, compile_search, wildcard_regex

STUDY, SERIES, INSTANCE = QueryLevel.STUDY, QueryLevel.SERIES, QueryLevel.INSTANCE
EMPTY_ACCESSION = {"$or": [{"k.00080050": {"$exists": False}}, {"k.00080050": {"$size": 0}}]}

GOLDEN: list[tuple[str, QueryLevel, list[tuple[str, str]], dict[str, Any]]] = [
    ("no keys", STUDY, [], {}),
    ("single value", STUDY, [("PatientID", "P-1")], {"k.00100020": "P-1"}),
    (
        "UID list on the document key",
        STUDY,
        [("StudyInstanceUID", "1.2,1.3")],
        {"_id": {"$in": ["1.2", "1.3"]}},
    ),
    (
        "person name folded, wildcard as an anchored prefix regex",
        STUDY,
        [("PatientName", "DOE^J*")],
        {"k.00100010": {"$regex": r"^doe\^j"}},
    ),
    (
        "range applies both ends to one value",
        STUDY,
        [("StudyDate", "20240101-20240131")],
        {"k.00080020": {"$elemMatch": {"$gte": "20240101", "$lte": "20240131"}}},
    ),
    (
        "zone-adjusted: UTC where known, else local",
        STUDY,
        [("StudyDate", "20240101-"), ("TimezoneOffsetFromUTC", "-0100")],
        {
            "$or": [
                {"k.00080020:U": {"$elemMatch": {"$gte": "20240101010000.000000"}}},
                {
                    "$and": [
                        {
                            "$or": [
                                {"k.00080020:U": {"$exists": False}},
                                {"k.00080020:U": {"$size": 0}},
                            ]
                        },
                        {"k.00080020": {"$elemMatch": {"$gte": "20240101"}}},
                    ]
                },
            ]
        },
    ),
    ("empty value", STUDY, [("AccessionNumber", '""')], EMPTY_ACCESSION),
    (
        "emptyvaluematching",
        STUDY,
        [("AccessionNumber", "A1"), ("emptyvaluematching", "true")],
        {"$or": [{"k.00080050": "A1"}, EMPTY_ACCESSION]},
    ),
    (
        "fuzzy tokens are word prefixes",
        STUDY,
        [("PatientName", "Jé Do"), ("fuzzymatching", "true")],
        {"$and": [{"k.00100010:F": {"$regex": "^je"}}, {"k.00100010:F": {"$regex": "^do"}}]},
    ),
    (
        "component groups",
        STUDY,
        [("PatientName", "Yamada=山田*")],
        {"$and": [{"k.00100010:A": "yamada"}, {"k.00100010:I": {"$regex": "^山田"}}]},
    ),
    (
        "relational keys read the copies of the upper levels",
        INSTANCE,
        [("PatientID", "P"), ("Modality", "CT"), ("SOPClassUID", "1.2"), ("InstanceNumber", "3")],
        {
            "$and": [
                {"sk.00100020": "P"},
                {"ek.00080060": "CT"},
                {"sop_class_uid": "1.2"},
                {"k.00200013": 3},
            ]
        },
    ),
    (
        "multiple values",
        SERIES,
        [("Modality", "CT\\MR")],
        {"$or": [{"k.00080060": "CT"}, {"k.00080060": "MR"}]},
    ),
    (
        "sequence item matching all its keys",
        SERIES,
        [("00400275.00400009", "S1"), ("00400275.00401001", "R*")],
        {
            "k.00400275": {
                "$elemMatch": {"$and": [{"00400009": "S1"}, {"00401001": {"$regex": "^R"}}]}
            }
        },
    ),
]


@pytest.mark.parametrize(
    ("level", "params", "expected"),
    [pytest.param(level, params, expected, id=name) for name, level, params, expected in GOLDEN],
)
def test_compile_filter_golden(
    level: QueryLevel, params: list[tuple[str, str]], expected: dict[str, Any]
) -> None:
    assert compile_filter(parse_search(level, params)) == expected


def test_scope_and_sort() -> None:
    request = parse_search(INSTANCE, [], study_uid="1.2", series_uid="1.2.3")
    collection, selector, sort = compile_search(request)
    assert collection == "instances"
    assert selector == {"$and": [{"study_uid": "1.2"}, {"series_uid": "1.2.3"}]}
    assert sort[0] == ("study_uid", 1)
    with pytest.raises(ValueError, match="series UID"):
        compile_filter(SearchRequest(level=SERIES, series_uid="1.2", limit=1))


REGEXES = [
    ("Doe*", "Doe", ["Doe", "Doe^John"], ["doe", "JDoe"]),
    ("*oe", None, ["Doe", "oe"], ["Does"]),
    ("D?e", None, ["Doe", "Dxe"], ["De", "Dooe"]),
    ("a.b*", "a\\.b", ["a.b", "a.bc"], ["axb"]),
    ("(x)+[y]$^", None, ["(x)+[y]$^"], ["x", "xy"]),
    ("line*", "line", ["line\nbreak"], []),
    ("*", "", ["", "anything"], []),
]


@pytest.mark.parametrize(("pattern", "prefix", "matching", "other"), REGEXES)
def test_wildcard_regex(
    pattern: str, prefix: str | None, matching: list[str], other: list[str]
) -> None:
    regex = wildcard_regex(pattern)
    if prefix is not None:
        assert regex == "^" + prefix  # an index-friendly prefix search
    for text in matching:
        assert re.search(regex, text), text
    for text in other:
        assert not re.search(regex, text), text
