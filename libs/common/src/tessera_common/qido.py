"""QIDO-RS query parameters parsed into one ``SearchRequest`` (PS3.18 §8.3.4, §10.6.1).

The parser is pure: it turns the URL's decoded ``(name, value)`` pairs and the path's UIDs into
a frozen, validated request that the query service compiles (to SQL for SQLite, to a filter
document for MongoDB). Everything a client can get wrong is answered here with
``TesseraError`` naming the parameter, so nothing unvalidated reaches a query.

Keys may name any attribute of the DICOM dictionary, by keyword or tag, and attributes inside
sequences by attribute path (``RequestAttributesSequence.ScheduledProcedureStepID``,
``00400275.00400009``: Sequence Matching). Each key belongs to the level whose entity it
describes (``attribute_level``); a key may be used at its own level and, as a relational key,
at any level below (PS3.18 §10.6.1.2.3). The matching types are built in ``qido_terms``.

The attribute tables quote PS3.18 §10.6.3.3, Tables 10.6.3-3, -4 and -5.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pydicom import datadict
from pydicom.datadict import DicomDictionary  # type: ignore[attr-defined]

from tessera_common.dicom_json import tags_for_keywords
from tessera_common.errors import ErrorCode, TesseraError
from tessera_common.messages import AttributeMatch, QueryLevel, SearchRequest
from tessera_common.qido_terms import UIDValueError, match_value
from tessera_common.qido_values import parse_offset
from tessera_common.uid import InvalidUIDError, validate_uid

#: Study-level required return attributes, PS3.18 Table 10.6.3-3.
STUDY_RETURN_ATTRIBUTES = tags_for_keywords(
    "SpecificCharacterSet",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "InstanceAvailability",
    "ModalitiesInStudy",
    "ReferringPhysicianName",
    "TimezoneOffsetFromUTC",
    "RetrieveURL",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyID",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)

#: Series-level required return attributes, PS3.18 Table 10.6.3-4.
SERIES_RETURN_ATTRIBUTES = tags_for_keywords(
    "SpecificCharacterSet",
    "Modality",
    "TimezoneOffsetFromUTC",
    "SeriesDescription",
    "RetrieveURL",
    "SeriesInstanceUID",
    "SeriesNumber",
    "NumberOfSeriesRelatedInstances",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "RequestAttributesSequence",
)

#: Instance-level required return attributes, PS3.18 Table 10.6.3-5.
INSTANCE_RETURN_ATTRIBUTES = tags_for_keywords(
    "SpecificCharacterSet",
    "SOPClassUID",
    "SOPInstanceUID",
    "InstanceAvailability",
    "TimezoneOffsetFromUTC",
    "RetrieveURL",
    "InstanceNumber",
    "Rows",
    "Columns",
    "BitsAllocated",
    "NumberOfFrames",
)

#: Study attributes returned with each series or instance when the study is not in the path
#: (PS3.18 §10.6.3.3.2 and §10.6.3.3.3: "all Study Level attributes of Table 10.6.3-3"). The
#: computed and per-resource ones (counts, Retrieve URL, availability) describe the study
#: resource itself and would clash with the lower level's own, so they are left out.
RELATIONAL_STUDY_ATTRIBUTES = STUDY_RETURN_ATTRIBUTES - tags_for_keywords(
    "SpecificCharacterSet",
    "InstanceAvailability",
    "ModalitiesInStudy",
    "RetrieveURL",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)

#: Series attributes returned with each instance when the series is not in the path
#: (PS3.18 §10.6.3.3.3), on the same principle.
RELATIONAL_SERIES_ATTRIBUTES = SERIES_RETURN_ATTRIBUTES - tags_for_keywords(
    "SpecificCharacterSet",
    "TimezoneOffsetFromUTC",
    "RetrieveURL",
    "NumberOfSeriesRelatedInstances",
)

REQUIRED_RETURN_ATTRIBUTES: dict[QueryLevel, frozenset[int]] = {
    QueryLevel.STUDY: STUDY_RETURN_ATTRIBUTES,
    QueryLevel.SERIES: SERIES_RETURN_ATTRIBUTES,
    QueryLevel.INSTANCE: INSTANCE_RETURN_ATTRIBUTES,
}

#: Attributes computed by the archive rather than stored (PS3.18 §10.6.3.3, PS3.4 §C.6.1.1).
COMPUTED_ATTRIBUTES = tags_for_keywords(
    "InstanceAvailability",
    "ModalitiesInStudy",
    "SOPClassesInStudy",
    "RetrieveURL",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
    "NumberOfSeriesRelatedInstances",
    "NumberOfPatientRelatedStudies",
    "NumberOfPatientRelatedSeries",
    "NumberOfPatientRelatedInstances",
)
#: Computed attributes that can also be matched (C.6.1.1.2: ModalitiesInStudy, SOPClassesInStudy).
MATCHABLE_COMPUTED = tags_for_keywords("ModalitiesInStudy", "SOPClassesInStudy")
#: Patient-level counts, returned at study level when asked for (PS3.4 §C.6.1.1.2).
PATIENT_COUNT_ATTRIBUTES = tags_for_keywords(
    "NumberOfPatientRelatedStudies",
    "NumberOfPatientRelatedSeries",
    "NumberOfPatientRelatedInstances",
)

TIMEZONE_OFFSET_FROM_UTC = 0x00080201
STUDY_INSTANCE_UID = 0x0020000D
SERIES_INSTANCE_UID = 0x0020000E
SOP_INSTANCE_UID = 0x00080018

#: Attributes kept with a study: the Patient (every attribute of group 0010), Patient Study,
#: General Study and Clinical Trial Subject/Study modules (PS3.3 §C.7.1.1, §C.7.2).
STUDY_LEVEL_TAGS = (
    (STUDY_RETURN_ATTRIBUTES - COMPUTED_ATTRIBUTES)
    | frozenset(tag for tag in DicomDictionary if tag >> 16 in (0x0010, 0x0012))
    | tags_for_keywords(
        "StudyTime",
        "IssuerOfAccessionNumberSequence",
        "StudyDescription",
        "ProcedureCodeSequence",
        "NameOfPhysiciansReadingStudy",
        "PhysiciansOfRecord",
        "ReferencedStudySequence",
        "AdmittingDiagnosesDescription",
        "RequestingPhysician",
        "RequestingService",
        "RequestedProcedureDescription",
        "ReasonForPerformedProcedureCodeSequence",
        "AdmissionID",
        "ReferringPhysicianIdentificationSequence",
    )
) - tags_for_keywords(
    "ClinicalTrialSeriesID",
    "ClinicalTrialSeriesDescription",
    "ClinicalTrialCoordinatingCenterName",
)

#: Attributes kept with a series: General Series, Frame of Reference and General Equipment.
SERIES_LEVEL_TAGS = (SERIES_RETURN_ATTRIBUTES - COMPUTED_ATTRIBUTES) | tags_for_keywords(
    "SeriesDate",
    "SeriesTime",
    "Laterality",
    "BodyPartExamined",
    "ProtocolName",
    "OperatorsName",
    "PerformingPhysicianName",
    "PatientPosition",
    "PerformedProcedureStepID",
    "PerformedProcedureStepDescription",
    "PerformedProtocolCodeSequence",
    "SeriesDescriptionCodeSequence",
    "SmallestPixelValueInSeries",
    "LargestPixelValueInSeries",
    "AnatomicalOrientationType",
    "ClinicalTrialSeriesID",
    "ClinicalTrialSeriesDescription",
    "ClinicalTrialCoordinatingCenterName",
    "FrameOfReferenceUID",
    "PositionReferenceIndicator",
    "Manufacturer",
    "InstitutionName",
    "InstitutionAddress",
    "StationName",
    "InstitutionalDepartmentName",
    "ManufacturerModelName",
    "DeviceSerialNumber",
    "SoftwareVersions",
)

_LEVEL_DEPTH = {QueryLevel.STUDY: 0, QueryLevel.SERIES: 1, QueryLevel.INSTANCE: 2}

#: Query parameters handled by the gateway's content negotiation (PS3.18 §8.3.3.1, §8.3.3.2).
_TRANSPORT_PARAMETERS = frozenset({"accept", "charset"})
_FLAGS = ("limit", "offset", "fuzzymatching", "emptyvaluematching")

MAX_VALUE_LENGTH = 1024
MAX_UID_LIST = 1000
MAX_PATH_DEPTH = 4
MAX_KEYS = 64
#: Offsets beyond this cannot address a real result and would overflow a 64-bit column.
MAX_OFFSET = 2**31 - 1

_HEX_TAG = re.compile(r"[0-9A-Fa-f]{8}")
_DIGITS = re.compile(r"[0-9]+")


def attribute_level(tag: int) -> QueryLevel:
    """The level of the entity an attribute describes: study for the Patient and Study
    modules and the study's computed attributes, series for the Series and Equipment modules,
    instance for everything else (PS3.4 §C.6.1.1)."""
    if tag in STUDY_LEVEL_TAGS or tag in _STUDY_KEYS:
        return QueryLevel.STUDY
    if tag in SERIES_LEVEL_TAGS or tag in _SERIES_KEYS:
        return QueryLevel.SERIES
    return QueryLevel.INSTANCE


_STUDY_KEYS = (
    frozenset({STUDY_INSTANCE_UID})
    | MATCHABLE_COMPUTED
    | PATIENT_COUNT_ATTRIBUTES
    | tags_for_keywords("NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances")
)
_SERIES_KEYS = frozenset({SERIES_INSTANCE_UID}) | tags_for_keywords(
    "NumberOfSeriesRelatedInstances"
)
_RESOURCE = {QueryLevel.STUDY: "studies", QueryLevel.SERIES: "series"}


def _invalid(reason: str) -> TesseraError:
    return TesseraError(ErrorCode.INVALID_QUERY, reason)


def _shown(text: str) -> str:
    return repr(text if len(text) <= 64 else text[:64] + "…")


def _vr(tag: int) -> str:
    """The dictionary VR; of the choices some attributes allow (``US or SS``), the first."""
    return str(datadict.dictionary_VR(tag)).split(" or ")[0]


def _resolve_one(name: str, *, parameter: str) -> int:
    if _HEX_TAG.fullmatch(name):
        tag = int(name, 16)
        if not datadict.dictionary_has_tag(tag):
            raise _invalid(f"{parameter}: {_shown(name)} is not a known DICOM attribute")
        return tag
    found = datadict.tag_for_keyword(name)
    if found is None:
        raise _invalid(f"{parameter}: {_shown(name)} is not a known DICOM attribute")
    return int(found)


def resolve_path(name: str, *, parameter: str) -> tuple[int, ...]:
    """The tags an attribute parameter names: a keyword or eight hex digits, or a path of them
    joined by ``.`` through sequences (PS3.18 §8.3.4.1, ``{attributeID}``). Unknown names,
    and paths through attributes that are not sequences, raise INVALID_QUERY."""
    parts = name.split(".")
    if len(parts) > MAX_PATH_DEPTH:
        raise _invalid(f"{parameter}: {_shown(name)} nests deeper than {MAX_PATH_DEPTH}")
    tags = tuple(_resolve_one(part, parameter=parameter) for part in parts)
    for tag, part in zip(tags[:-1], parts[:-1], strict=True):
        if _vr(tag) != "SQ":
            raise _invalid(f"{parameter}: {_shown(part)} in {_shown(name)} is not a sequence")
    return tags


def resolve_attribute(name: str, *, parameter: str) -> int:
    """The tag of a top-level attribute parameter (keyword or eight hex digits)."""
    return resolve_path(name, parameter=parameter)[0]


def keyword_of(tag: int) -> str:
    keyword = datadict.keyword_for_tag(tag)
    return str(keyword) if keyword else f"{tag:08X}"


def _parse_count(name: str, value: str, *, upper: int) -> int:
    if not _DIGITS.fullmatch(value):
        raise _invalid(f"{name} must be a non-negative integer, got {_shown(value)}")
    if len(value) > 12 or int(value) > upper:
        raise _invalid(f"{name} must be at most {upper}, got {_shown(value)}")
    return int(value)


def _parse_flag(name: str, value: str) -> bool:
    lowered = value.lower()
    if lowered not in ("true", "false"):
        raise _invalid(f"{name} must be 'true' or 'false', got {_shown(value)}")
    return lowered == "true"


class _Options:
    """The query-wide parameters, read before the keys they affect."""

    def __init__(self, fuzzy: bool, empty: bool, timezone: int | None) -> None:
        self.fuzzy = fuzzy
        self.empty = empty
        self.timezone = timezone


def _leaf_match(tags: tuple[int, ...], name: str, value: str, options: _Options) -> AttributeMatch:
    tag = tags[-1]
    keyword = keyword_of(tag)
    vr = _vr(tag)
    if len(value) > (MAX_UID_LIST * 65 if vr == "UI" else MAX_VALUE_LENGTH):
        raise _invalid(f"{name}: value too long")
    if tag in COMPUTED_ATTRIBUTES and tag not in MATCHABLE_COMPUTED and value.strip(" "):
        raise _invalid(
            f"{name}: {keyword} is computed by the archive; it can be returned (includefield, "
            "or an empty value) but not matched"
        )
    try:
        return match_value(
            tag,
            vr,
            value,
            fuzzy=options.fuzzy,
            timezone=options.timezone,
            empty_value_matching=options.empty and vr != "UI" and len(tags) == 1,
        )
    except UIDValueError as exc:
        raise TesseraError(ErrorCode.INVALID_UID, f"{name}: {exc}") from None
    except ValueError as exc:
        raise _invalid(f"{name}: {exc}") from None


def parse_match(
    level: QueryLevel,
    name: str,
    value: str,
    *,
    fuzzy: bool = False,
    empty_value_matching: bool = False,
    timezone: int | None = None,
) -> AttributeMatch:
    """One ``{attributeID}={value}`` matching parameter (PS3.18 §8.3.4.1) at ``level``."""
    options = _Options(fuzzy, empty_value_matching, timezone)
    tags = resolve_path(name, parameter=name)
    _check_level(level, tags[0], name)
    if len(tags) == 1:
        return _leaf_match(tags, name, value, options)
    return _SequenceTree(tags[0]).add(tags[1:], name, value, options).build()


def _check_level(level: QueryLevel, tag: int, name: str) -> None:
    key_level = attribute_level(tag)
    if _LEVEL_DEPTH[key_level] > _LEVEL_DEPTH[level]:
        raise _invalid(
            f"{name}: {keyword_of(tag)} is a {key_level} attribute, not a {level} level key "
            f"(search /{_RESOURCE.get(key_level, 'instances')} to match it)"
        )


class _SequenceTree:
    """The keys given inside one sequence (Sequence Matching, PS3.4 §C.2.2.2.6): an item
    matches when it matches every one of them."""

    def __init__(self, tag: int) -> None:
        self.tag = tag
        self.leaves: dict[int, AttributeMatch] = {}
        self.children: dict[int, _SequenceTree] = {}

    def add(self, tags: tuple[int, ...], name: str, value: str, options: _Options) -> _SequenceTree:
        head = tags[0]
        if len(tags) == 1:
            if head in self.leaves or head in self.children:
                raise _invalid(f"{name}: given more than once")
            self.leaves[head] = _leaf_match(tags, name, value, options)
        else:
            if head in self.leaves:
                raise _invalid(f"{name}: given more than once")
            self.children.setdefault(head, _SequenceTree(head)).add(tags[1:], name, value, options)
        return self

    def build(self) -> AttributeMatch:
        items = [*self.leaves.values(), *(child.build() for child in self.children.values())]
        matching = [item for item in items if item.kind != "universal"]
        if not matching:
            return AttributeMatch(tag=self.tag, value="", kind="universal", vr="SQ")
        items.sort(key=lambda item: item.tag)
        return AttributeMatch(tag=self.tag, value="", kind="sequence", vr="SQ", items=matching)


def _validated_path_uid(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    try:
        return validate_uid(value, what=what)
    except InvalidUIDError as exc:
        raise TesseraError(ErrorCode.INVALID_UID, str(exc)) from None


def _read_options(
    params: Sequence[tuple[str, str]], max_limit: int, default_limit: int
) -> tuple[_Options, int, int]:
    seen: set[str] = set()
    limit = min(default_limit, max_limit)
    offset = 0
    fuzzy = empty = False
    timezone: int | None = None
    for name, value in params:
        if name in _FLAGS:
            if name in seen:
                raise _invalid(f"{name} given more than once")
            seen.add(name)
            if name == "limit":
                limit = min(_parse_count("limit", value, upper=10**9), max_limit)
            elif name == "offset":
                offset = _parse_count("offset", value, upper=MAX_OFFSET)
            elif name == "fuzzymatching":
                fuzzy = _parse_flag(name, value)
            else:
                empty = _parse_flag(name, value)
        elif name in ("TimezoneOffsetFromUTC", "00080201") and value.strip(" "):
            if "timezone" in seen:
                raise _invalid("TimezoneOffsetFromUTC given more than once")
            seen.add("timezone")
            try:
                timezone = parse_offset(value)
            except ValueError as exc:
                raise _invalid(f"TimezoneOffsetFromUTC: {exc}") from None
    return _Options(fuzzy, empty, timezone), limit, offset


def parse_search(
    level: QueryLevel,
    params: Sequence[tuple[str, str]],
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    default_limit: int = 1000,
    max_limit: int = 10000,
) -> SearchRequest:
    """Parse a QIDO-RS request (PS3.18 §10.6.1) into a ``SearchRequest``.

    ``params`` are the decoded query parameters in URL order; ``study_uid``/``series_uid`` come
    from the resource path (``/studies/{study}/series``, ``/studies/{study}/series/{series}/
    instances``). ``limit`` is capped at ``max_limit`` rather than refused (§8.3.4.4 lets the
    origin server return fewer results). Matched keys are added to ``include_fields``: the
    response carries every attribute that was matched (§10.6.3.3). ``TimezoneOffsetFromUTC``
    is not matched: it says in which zone the query's dates and times are (PS3.4 §C.4.1.1.3.2
    Timezone Query Adjustment). Parameters starting with ``_`` (cache busters) and the
    transport parameters ``accept``/``charset`` are ignored.
    """
    study_uid = _validated_path_uid(study_uid, "Study Instance UID")
    series_uid = _validated_path_uid(series_uid, "Series Instance UID")
    if series_uid is not None and (level is not QueryLevel.INSTANCE or study_uid is None):
        raise _invalid("a series in the path needs its study and an instance-level query")
    if study_uid is not None and level is QueryLevel.STUDY:
        raise _invalid("a study-level query cannot be scoped to a study")

    options, limit, offset = _read_options(params, max_limit, default_limit)
    leaves: dict[int, AttributeMatch] = {}
    trees: dict[int, _SequenceTree] = {}
    include: dict[int, None] = {}
    include_all = False
    keys = 0

    for name, value in params:
        if name.startswith("_") or name in _TRANSPORT_PARAMETERS or name in _FLAGS:
            continue
        if name == "includefield":
            for item in value.split(","):
                field = item.strip()
                if field == "all":
                    include_all = True
                elif field:
                    include[resolve_path(field, parameter="includefield")[0]] = None
                else:
                    raise _invalid("includefield: empty attribute name")
            continue
        keys += 1
        if keys > MAX_KEYS:
            raise _invalid(f"at most {MAX_KEYS} matching keys may be given")
        tags = resolve_path(name, parameter=name)
        top = tags[0]
        include[top] = None
        if top == TIMEZONE_OFFSET_FROM_UTC and len(tags) == 1:
            continue  # read by _read_options
        _check_level(level, top, name)
        if len(tags) == 1:
            if top in leaves or (top in trees and value.strip(" ")):
                raise _invalid(f"{name}: {keyword_of(top)} given more than once")
            if top in trees:
                continue  # an empty sequence key beside its paths only asks for the sequence
            leaves[top] = _leaf_match(tags, name, value, options)
        else:
            if top in leaves and leaves[top].kind != "universal":
                raise _invalid(f"{name}: {keyword_of(top)} given more than once")
            leaves.pop(top, None)
            trees.setdefault(top, _SequenceTree(top)).add(tags[1:], name, value, options)

    matches = {**leaves, **{tag: tree.build() for tag, tree in trees.items()}}
    return SearchRequest(
        level=level,
        study_uid=study_uid,
        series_uid=series_uid,
        matches=[matches[tag] for tag in include if tag in matches],
        include_fields=list(include),
        include_all=include_all,
        limit=limit,
        offset=offset,
        fuzzy=options.fuzzy,
        empty_value_matching=options.empty,
        timezone_offset=options.timezone,
    )
