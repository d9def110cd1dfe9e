"""THE reference table of QIDO-RS searches: query → expected matches over ``qido_corpus``.

One row per behaviour, covering every matching type of PS3.4 §C.2.2.2 and every query
parameter of PS3.18 §8.3.4. The same rows run against the SQLite index
(tests/component/test_query_reference.py), against the MongoDB index with its filters executed
by mongomock (same file), against a real MongoDB (tests/containers/test_mongo_index.py) and,
in part, over HTTP through dicomweb-client (tests/e2e/test_qido_e2e.py).

Expected matches are corpus names (``doe``, ``doe/1``, ``doe/1/2``, ``chrFren``); ``ALL``
stands for every resource of the level. In parameter values, ``{study:doe}``,
``{series:cq500/s}`` and ``{instance:doe/1/2}`` stand for the UIDs of those resources.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tests.support.qido_corpus import SOP_CLASSES, Corpus

from tessera_common.messages import QueryLevel, SearchReply, SearchRequest
from tessera_common.qido import parse_search

STUDY, SERIES, INSTANCE = QueryLevel.STUDY, QueryLevel.SERIES, QueryLevel.INSTANCE
ALL = ("*",)
UID_TAG = {STUDY: "0020000D", SERIES: "0020000E", INSTANCE: "00080018"}
_PLACEHOLDER = re.compile(r"\{(study|series|instance):([^}]+)\}")

CHARSET_STUDIES = (
    "chrArab",
    "chrFren",
    "chrGerm",
    "chrGreek",
    "chrH31",
    "chrH32",
    "chrHbrw",
    "chrI2",
    "chrRuss",
    "chrX1",
    "chrX2",
)


@dataclass(frozen=True)
class QueryCase:
    id: str
    level: QueryLevel
    params: tuple[tuple[str, str], ...]
    expected: tuple[str, ...]
    study: str | None = None  # a study name in the path
    series: str | None = None  # a series name in the path

    def request(self, corpus: Corpus, **limits: Any) -> SearchRequest:
        params = [(name, _resolve(corpus, value)) for name, value in self.params]
        return parse_search(
            self.level,
            params,
            study_uid=corpus.uid(STUDY, self.study) if self.study else None,
            series_uid=corpus.uid(SERIES, self.series) if self.series else None,
            **limits,
        )

    def expected_names(self, corpus: Corpus) -> list[str]:
        if self.expected == ALL:
            return sorted(corpus.names[self.level])
        return sorted(self.expected)


def _resolve(corpus: Corpus, value: str) -> str:
    return _PLACEHOLDER.sub(lambda m: corpus.uid(QueryLevel(m.group(1)), m.group(2)), value)


def found_names(corpus: Corpus, level: QueryLevel, reply: SearchReply) -> list[str]:
    tag = UID_TAG[level]
    return sorted(corpus.name_of(level, result[tag]["Value"][0]) for result in reply.results)


def case(
    id: str,
    level: QueryLevel,
    params: list[tuple[str, str]],
    expected: tuple[str, ...] | list[str],
    **scope: str,
) -> QueryCase:
    return QueryCase(id, level, tuple(params), tuple(expected), **scope)


CASES = [
    # -- Single Value Matching (PS3.4 §C.2.2.2.1) ------------------------------------------
    case("single: PatientID", STUDY, [("PatientID", "PID-1")], ["doe", "jane"]),
    case("single: PatientID is case-sensitive", STUDY, [("PatientID", "pid-1")], []),
    case("single: key by tag", STUDY, [("00100020", "PID-2")], ["nunez"]),
    case(
        "single: GLOB and LIKE characters are literal",
        STUDY,
        [("AccessionNumber", "ACC[1]%_x")],
        ["doe"],
    ),
    case("single: StudyID", STUDY, [("StudyID", "S2")], ["jane"]),
    case("single: IS as a number", SERIES, [("SeriesNumber", "+007")], ["jane/1"]),
    case(
        "single: DS 5.0 equals stored 5",
        INSTANCE,
        [("SliceThickness", "5.0")],
        ["doe/1/2", "cq500/s/i"],
    ),
    case("single: Modality", SERIES, [("Modality", "SR")], ["doe/2", "cq500/sr"]),
    case(
        "single: SOPClassUID",
        INSTANCE,
        [("SOPClassUID", SOP_CLASSES["US"])],
        ["nunez/1/1", "kidney/s/i"],
    ),
    case(
        "single: InstanceNumber in a series",
        INSTANCE,
        [("InstanceNumber", "2")],
        ["doe/1/2"],
        study="doe",
        series="doe/1",
    ),
    case("single: any stored attribute (LO)", STUDY, [("StudyDescription", "Chest CT")], ["doe"]),
    case("single: series attribute", SERIES, [("BodyPartExamined", "HEAD")], ["jane/1", "emri/s"]),
    case("single: PatientBirthDate", STUDY, [("PatientBirthDate", "19700101")], ["doe", "pdf"]),
    case("single: attribute nobody has", STUDY, [("PatientMotherBirthName", "X")], []),
    # -- person names: case-insensitive, every component group, every character set -------
    case("PN: case-insensitive", STUDY, [("PatientName", "doe^john")], ["doe"]),
    case("PN: trailing separators", STUDY, [("PatientName", "Doe^John^^")], ["doe"]),
    case("PN: Latin-1 (ISO_IR 100)", STUDY, [("PatientName", "Buc^Jérôme")], ["chrFren"]),
    case("PN: German upper case", STUDY, [("PatientName", "ÄNEAS^RÜDIGER")], ["chrGerm"]),
    case("PN: Greek (ISO_IR 126)", STUDY, [("PatientName", "διονυσιος")], ["chrGreek"]),
    case(
        "PN: Cyrillic (ISO_IR 144)",
        STUDY,
        [("PatientName", "Люкceмбypг")],  # noqa: RUF001 - the stored name mixes scripts
        ["chrRuss"],
    ),
    case("PN: Arabic (ISO_IR 127)", STUDY, [("PatientName", "قباني^لنزار")], ["chrArab"]),
    case("PN: Hebrew (ISO_IR 138)", STUDY, [("PatientName", "שרון^דבורה")], ["chrHbrw"]),
    case(
        "PN: Japanese ideographic (ISO 2022 IR 87)",
        STUDY,
        [("PatientName", "山田^太郎")],
        ["chrH31", "chrH32"],
    ),
    case(
        "PN: Japanese phonetic",
        STUDY,
        [("PatientName", "やまだ^たろう")],
        ["chrH31", "chrH32", "chrJapMulti"],
    ),
    case(
        "PN: half-width katakana (ISO 2022 IR 13) equals full-width",
        STUDY,
        [("PatientName", "ヤマダ^タロウ")],
        ["chrH32"],
    ),
    case(
        "PN: component groups all match",
        STUDY,
        [("PatientName", "Yamada^Tarou=山田^太郎")],
        ["chrH31"],
    ),
    case(
        "PN: ideographic group alone", STUDY, [("PatientName", "=山田^太郎")], ["chrH31", "chrH32"]
    ),
    case("PN: Korean (ISO 2022 IR 149)", STUDY, [("PatientName", "홍^길동")], ["chrI2"]),
    case("PN: Korean single name", STUDY, [("PatientName", "김희중")], ["chrKoreanMulti"]),
    case("PN: Chinese UTF-8", STUDY, [("PatientName", "王^小東")], ["chrX1"]),
    case("PN: Chinese GB18030", STUDY, [("PatientName", "王^小东")], ["chrX2"]),
    case("PN: relational at series level", SERIES, [("PatientName", "doe^jane")], ["jane/1"]),
    case("PN: any PN attribute", STUDY, [("ReferringPhysicianName", "WELBY^MARCUS")], ["doe"]),
    # -- Wildcard Matching (§C.2.2.2.4) -----------------------------------------------------
    case("wildcard: prefix", STUDY, [("PatientName", "Doe*")], ["doe", "jane"]),
    case(
        "wildcard: infix, case-insensitive",
        STUDY,
        [("PatientName", "*^j*")],
        ["doe", "jane", "chrFren", "nunez"],
    ),
    case("wildcard: ?", STUDY, [("PatientName", "D?E^*")], ["doe", "jane"]),
    case("wildcard: CJK prefix", STUDY, [("PatientName", "王*")], ["chrX1", "chrX2"]),
    case("wildcard: GLOB bracket literal", STUDY, [("AccessionNumber", "ACC[1]*")], ["doe"]),
    case("wildcard: % and _ literal", STUDY, [("StudyDescription", "*%_*")], ["blank"]),
    case(
        "wildcard: ? matches a stored *",
        STUDY,
        [("StudyDescription", "Abdomen ?literal*")],
        ["nunez"],
    ),
    case("wildcard: case-sensitive for LO", STUDY, [("StudyDescription", "chest*")], []),
    case("wildcard: LT", INSTANCE, [("ImageComments", "C*mment? *")], ["doe/1/2"]),
    case("wildcard: multi-valued PN", STUDY, [("OtherPatientNames", "poe*")], ["doe"]),
    case("wildcard: only * is universal", STUDY, [("PatientName", "**")], ALL),
    # -- fuzzymatching (PS3.18 §8.3.4.2) ----------------------------------------------------
    case(
        "fuzzy: accent-insensitive word prefix",
        STUDY,
        [("PatientName", "jose"), ("fuzzymatching", "true")],
        ["nunez"],
    ),
    case(
        "fuzzy: order-insensitive",
        STUDY,
        [("PatientName", "maria nunez"), ("fuzzymatching", "true")],
        ["nunez"],
    ),
    case(
        "fuzzy: every word must match",
        STUDY,
        [("PatientName", "jer buc"), ("fuzzymatching", "true")],
        ["chrFren"],
    ),
    case(
        "fuzzy: short prefix",
        STUDY,
        [("PatientName", "jo"), ("fuzzymatching", "true")],
        ["doe", "nunez"],
    ),
    case(
        "fuzzy: kana without voicing marks",
        STUDY,
        [("PatientName", "やまた"), ("fuzzymatching", "true")],
        ["chrH31", "chrH32", "chrJapMulti"],
    ),
    case(
        "fuzzy: off is literal",
        STUDY,
        [("PatientName", "jose"), ("fuzzymatching", "false")],
        [],
    ),
    case(
        "fuzzy: applies to PN only",
        STUDY,
        [("StudyDescription", "chest"), ("fuzzymatching", "true")],
        [],
    ),
    # -- Range Matching (§C.2.2.2.5) --------------------------------------------------------
    case("range: open end", STUDY, [("StudyDate", "20240101-")], ["doe", "mammo", "angio"]),
    case("range: open start", STUDY, [("StudyDate", "-20000101")], ["emri"]),
    case("range: closed", STUDY, [("StudyDate", "20230101-20231231")], ["jane", "nunez"]),
    case(
        "range: single date",
        STUDY,
        [("StudyDate", "20080504")],
        ["chrJapMulti", "chrKoreanMulti"],
    ),
    case(
        "range: TM",
        STUDY,
        [("StudyTime", "1000-1100")],
        ["doe", "mammo", "angio"],
    ),
    case(
        "range: TM precision is the whole hour",
        STUDY,
        [("StudyTime", "10")],
        ["doe", "mammo", "angio"],
    ),
    case("range: TM upper end includes its minute", STUDY, [("StudyTime", "-1015")], ["doe"]),
    case(
        "range: DT local date",
        INSTANCE,
        [("AcquisitionDateTime", "20240105")],
        ["doe/1/1", "doe/1/2"],
    ),
    case(
        "range: DT with offsets compares instants",
        INSTANCE,
        [("AcquisitionDateTime", "20240105090000+0000-20240105100000+0000")],
        ["doe/1/1"],
    ),
    case(
        "range: DT negative offset",
        INSTANCE,
        [("AcquisitionDateTime", "20240101043000+0000")],
        ["jane/1/1"],
    ),
    case(
        "range: relational date at instance level",
        INSTANCE,
        [("StudyDate", "20231231"), ("SeriesNumber", "7")],
        ["jane/1/1"],
    ),
    # -- TimezoneOffsetFromUTC (PS3.4 §C.4.1.1.3.2) -----------------------------------------
    case(
        "timezone: date in UTC finds a study stored at -0500",
        STUDY,
        [("StudyDate", "20240101"), ("TimezoneOffsetFromUTC", "+0000")],
        ["jane"],
    ),
    case(
        "timezone: the local date in UTC is another day",
        STUDY,
        [("StudyDate", "20231231"), ("TimezoneOffsetFromUTC", "+0000")],
        [],
    ),
    case(
        "timezone: same zone as stored",
        STUDY,
        [("StudyDate", "20231231"), ("00080201", "-0500")],
        ["jane"],
    ),
    case(
        "timezone: studies without a zone compare locally",
        STUDY,
        [("StudyDate", "20080504"), ("TimezoneOffsetFromUTC", "+0900")],
        ["chrJapMulti", "chrKoreanMulti"],
    ),
    case(
        "timezone: Tokyo morning is Europe's evening before",
        STUDY,
        [("StudyDate", "20240105"), ("TimezoneOffsetFromUTC", "+0900")],
        ["doe"],
    ),
    # -- Empty Value Matching (§C.2.2.2.7) --------------------------------------------------
    case(
        'empty: "" finds empty and absent values',
        STUDY,
        [("AccessionNumber", '""')],
        [*CHARSET_STUDIES, "cq500", "emri", "jane", "nunez", "blank"],
    ),
    case('empty: "" on a person name', STUDY, [("PatientName", '""')], ["blank", "emri"]),
    case(
        'empty: "" on a series attribute',
        SERIES,
        [("SeriesNumber", '""')],
        ["blank/1"],
    ),
    case(
        "emptyvaluematching adds entities without a value",
        SERIES,
        [("BodyPartExamined", "CHEST"), ("emptyvaluematching", "true")],
        ["doe/1", "doe/2"],
        study="doe",
    ),
    case(
        "emptyvaluematching=false",
        SERIES,
        [("BodyPartExamined", "CHEST"), ("emptyvaluematching", "false")],
        ["doe/1"],
        study="doe",
    ),
    # -- Multiple Value Matching (§C.2.2.2.8) and multi-valued attributes -------------------
    case(
        "multiple: ModalitiesInStudy any of",
        STUDY,
        [("ModalitiesInStudy", "SEG\\MR")],
        ["cq500", "jane", "emri"],
    ),
    case(
        "multiple: CS values separated by commas",
        SERIES,
        [("Modality", "SR,US")],
        ["doe/2", "cq500/sr", "nunez/1", "kidney/s"],
    ),
    case(
        "multiple: dates and ranges",
        STUDY,
        [("StudyDate", "20080504\\-20000101")],
        ["chrJapMulti", "chrKoreanMulti", "emri"],
    ),
    case("multi-valued attribute: ImageType", INSTANCE, [("ImageType", "MPR")], ["doe/1/2"]),
    case(
        "multi-valued attribute: ModalitiesInStudy",
        STUDY,
        [("ModalitiesInStudy", "KO")],
        ["cq500"],
    ),
    case(
        "SOPClassesInStudy",
        STUDY,
        [("SOPClassesInStudy", SOP_CLASSES["SR"])],
        ["doe"],
    ),
    # -- List of UID Matching (§C.2.2.2.2) --------------------------------------------------
    case(
        "UID list with commas",
        STUDY,
        [("StudyInstanceUID", "{study:doe},{study:nunez}")],
        ["doe", "nunez"],
    ),
    case(
        "UID list with backslashes",
        INSTANCE,
        [("SOPInstanceUID", "{instance:doe/1/2}\\{instance:jane/1/1}")],
        ["doe/1/2", "jane/1/1"],
    ),
    case(
        "UID of another study in a study-scoped search",
        SERIES,
        [("SeriesInstanceUID", "{series:doe/1}")],
        [],
        study="jane",
    ),
    # -- Sequence Matching (§C.2.2.2.6) -----------------------------------------------------
    case(
        "sequence: one key",
        SERIES,
        [("RequestAttributesSequence.ScheduledProcedureStepID", "SPS2")],
        ["doe/1"],
    ),
    case(
        "sequence: keys of one item",
        SERIES,
        [
            ("RequestAttributesSequence.ScheduledProcedureStepID", "SPS2"),
            ("00400275.00401001", "RP2"),
        ],
        ["doe/1"],
    ),
    case(
        "sequence: keys of different items do not match",
        SERIES,
        [
            ("RequestAttributesSequence.ScheduledProcedureStepID", "SPS1"),
            ("RequestAttributesSequence.RequestedProcedureID", "RP2"),
        ],
        [],
    ),
    case(
        "sequence: wildcard inside",
        SERIES,
        [("RequestAttributesSequence.RequestedProcedureID", "RP*")],
        ["doe/1"],
    ),
    case(
        "sequence: nested, in an SR",
        INSTANCE,
        [("ContentSequence.ConceptNameCodeSequence.CodeValue", "121071")],
        ["doe/2/1"],
    ),
    case(
        "sequence: nested, in a real TID 1500 SR",
        INSTANCE,
        [("ContentSequence.ConceptNameCodeSequence.CodeValue", "126010")],
        ["cq500/sr/i"],
    ),
    case(
        "sequence: UID in a SEG's referenced series",
        INSTANCE,
        [("ReferencedSeriesSequence.SeriesInstanceUID", "{series:cq500/s}")],
        ["cq500/seg/i"],
    ),
    case(
        "sequence: UID two levels down in a KOS and an SR",
        INSTANCE,
        [
            (
                "CurrentRequestedProcedureEvidenceSequence.ReferencedSeriesSequence"
                ".SeriesInstanceUID",
                "{series:cq500/s}",
            )
        ],
        ["cq500/ko/i", "cq500/sr/i"],
    ),
    # -- Universal Matching (§C.2.2.2.3) and relational queries (PS3.18 §10.6.1.2.3) -------
    case("universal: empty value", STUDY, [("PatientName", "")], ALL),
    case("universal: no keys", SERIES, [], ALL),
    case(
        "scoped: series of a study",
        SERIES,
        [],
        ["cq500/s", "cq500/seg", "cq500/sr", "cq500/ko"],
        study="cq500",
    ),
    case(
        "relational: study and series keys at instance level",
        INSTANCE,
        [("PatientID", "PID-2"), ("Modality", "CT")],
        ["nunez/2/1"],
    ),
    case(
        "relational: ModalitiesInStudy with Modality",
        SERIES,
        [("ModalitiesInStudy", "SEG"), ("Modality", "CT")],
        ["cq500/s"],
    ),
    case(
        "relational: instances of a study by a study key",
        INSTANCE,
        [("StudyDescription", "Abdomen*")],
        ["nunez/1/1", "nunez/2/1"],
    ),
]
