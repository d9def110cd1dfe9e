"""QIDO-RS query parameters parsed into one ``SearchRequest`` (PS3.18 §8.3.4, §10.6.1).

The parser is pure: it turns the URL's decoded ``(name, value)`` pairs and the path's UIDs into
a frozen, validated request that the query service compiles (to SQL today, to a MongoDB filter
later). Everything a client can get wrong is answered here with ``TesseraError`` naming the
parameter, so nothing unvalidated reaches a query.

Matching (PS3.4 §C.2.2.2) is deliberately minimal for now: Single Value Matching, List of UID
Matching and Universal Matching on the keys of ``MATCHING_KEY_LEVELS``. Wildcard, range and
multi-value matching, sequence paths and fuzzy matching are refused with a reason saying they
are not supported yet, never silently matched literally.

The attribute tables quote PS3.18 §10.6.3.3, Tables 10.6.3-3, -4 and -5.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

from pydicom import datadict

from tessera_common.errors import ErrorCode, TesseraError
from tessera_common.messages import AttributeMatch, QueryLevel, SearchRequest
from tessera_common.uid import InvalidUIDError, validate_uid


def _tags(*keywords: str) -> frozenset[int]:
    tags = set()
    for keyword in keywords:
        tag = datadict.tag_for_keyword(keyword)
        if tag is None:  # pragma: no cover - a typo in the tables below
            raise ValueError(f"unknown DICOM keyword {keyword!r}")
        tags.add(int(tag))
    return frozenset(tags)


#: Study-level required return attributes, PS3.18 Table 10.6.3-3.
STUDY_RETURN_ATTRIBUTES = _tags(
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
SERIES_RETURN_ATTRIBUTES = _tags(
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
INSTANCE_RETURN_ATTRIBUTES = _tags(
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
RELATIONAL_STUDY_ATTRIBUTES = STUDY_RETURN_ATTRIBUTES - _tags(
    "SpecificCharacterSet",
    "InstanceAvailability",
    "ModalitiesInStudy",
    "RetrieveURL",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)

#: Series attributes returned with each instance when the series is not in the path
#: (PS3.18 §10.6.3.3.3), on the same principle.
RELATIONAL_SERIES_ATTRIBUTES = SERIES_RETURN_ATTRIBUTES - _tags(
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

_LEVEL_DEPTH = {QueryLevel.STUDY: 0, QueryLevel.SERIES: 1, QueryLevel.INSTANCE: 2}

#: The keys that can be matched today and the level each belongs to. A key may be used at
#: its own level and, as a relational key, at any level below (PS3.18 §10.6.1.2.3).
MATCHING_KEY_LEVELS: dict[int, QueryLevel] = {
    **dict.fromkeys(
        _tags(
            "StudyInstanceUID",
            "PatientID",
            "PatientName",
            "AccessionNumber",
            "StudyDate",
            "StudyID",
            "ModalitiesInStudy",
        ),
        QueryLevel.STUDY,
    ),
    **dict.fromkeys(
        _tags("SeriesInstanceUID", "Modality", "SeriesNumber"),
        QueryLevel.SERIES,
    ),
    **dict.fromkeys(
        _tags("SOPInstanceUID", "SOPClassUID", "InstanceNumber"),
        QueryLevel.INSTANCE,
    ),
}

#: Value Representations for which ``*`` and ``?`` are wildcards (PS3.4 §C.2.2.2.4).
_WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
#: Value Representations for which ``-`` denotes a range (PS3.4 §C.2.2.2.5).
_RANGE_VRS = frozenset({"DA", "TM", "DT"})

#: Query parameters handled by the gateway's content negotiation (PS3.18 §8.3.3.1, §8.3.3.2).
_TRANSPORT_PARAMETERS = frozenset({"accept", "charset"})

MAX_VALUE_LENGTH = 1024
MAX_UID_LIST = 1000
#: Offsets beyond this cannot address a real result and would overflow a 64-bit column.
MAX_OFFSET = 2**31 - 1

_HEX_TAG = re.compile(r"[0-9A-Fa-f]{8}")
_DIGITS = re.compile(r"[0-9]+")
_INTEGER_STRING = re.compile(r"[+-]?[0-9]{1,12}")
_UID_SEPARATORS = re.compile(r"[,\\]")


def _invalid(reason: str) -> TesseraError:
    return TesseraError(ErrorCode.INVALID_QUERY, reason)


def _shown(text: str) -> str:
    return repr(text if len(text) <= 64 else text[:64] + "…")


def resolve_attribute(name: str, *, parameter: str) -> int:
    """The tag an attribute parameter names: a DICOM keyword or eight hex digits
    (PS3.18 §8.3.4.1, ``{attributeID}``). Unknown names raise INVALID_QUERY."""
    if _HEX_TAG.fullmatch(name):
        return int(name, 16)
    if "." in name:
        raise _invalid(
            f"{parameter}: sequence attribute paths such as {_shown(name)} are not supported yet"
        )
    tag = datadict.tag_for_keyword(name)
    if tag is None:
        raise _invalid(f"{parameter}: {_shown(name)} is not a known DICOM attribute")
    return int(tag)


def _keyword(tag: int) -> str:
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


def _parse_uid_list(tag: int, keyword: str, value: str) -> AttributeMatch:
    """List of UID Matching (PS3.4 §C.2.2.2.2): UIDs separated by ``\\`` or ``,``."""
    parts = [part.strip(" ") for part in _UID_SEPARATORS.split(value)]
    if len(parts) > MAX_UID_LIST:
        raise _invalid(f"{keyword}: at most {MAX_UID_LIST} UIDs may be listed")
    for part in parts:
        try:
            validate_uid(part, what=keyword)
        except InvalidUIDError as exc:
            raise TesseraError(ErrorCode.INVALID_UID, str(exc)) from None
    unique = list(dict.fromkeys(parts))
    if len(unique) == 1:
        return AttributeMatch(tag=tag, value=unique[0], kind="single")
    return AttributeMatch(tag=tag, value="\\".join(unique), kind="uid_list")


def _parse_single_value(tag: int, keyword: str, vr: str, value: str) -> AttributeMatch:
    """Single Value Matching (PS3.4 §C.2.2.2.1), refusing the forms of the other matching
    types until they are implemented."""
    if "\\" in value:
        raise _invalid(f"{keyword}: matching on multiple values is not supported yet")
    if vr in _WILDCARD_VRS and ("*" in value or "?" in value):
        raise _invalid(f"{keyword}: wildcard matching is not supported yet")
    if vr in _RANGE_VRS and "-" in value:
        raise _invalid(f"{keyword}: range matching is not supported yet")
    if vr == "DA":
        try:
            if len(value) != 8:
                raise ValueError(value)
            datetime.strptime(value, "%Y%m%d")
        except ValueError:
            raise _invalid(f"{keyword}: {_shown(value)} is not a date (YYYYMMDD)") from None
    if vr == "IS":
        if not _INTEGER_STRING.fullmatch(value):
            raise _invalid(f"{keyword}: {_shown(value)} is not an integer")
        value = str(int(value))
    return AttributeMatch(tag=tag, value=value, kind="single")


def parse_match(level: QueryLevel, name: str, value: str) -> AttributeMatch:
    """One ``{attributeID}={value}`` matching parameter (PS3.18 §8.3.4.1) at ``level``."""
    tag = resolve_attribute(name, parameter=name)
    keyword = _keyword(tag)
    key_level = MATCHING_KEY_LEVELS.get(tag)
    if key_level is None:
        if not datadict.dictionary_has_tag(tag):
            raise _invalid(f"{name}: {_shown(name)} is not a known DICOM attribute")
        raise _invalid(f"{name}: matching on {keyword} is not supported yet")
    if _LEVEL_DEPTH[key_level] > _LEVEL_DEPTH[level]:
        raise _invalid(f"{name}: {keyword} is a {key_level} attribute, not a {level} level key")
    vr = str(datadict.dictionary_VR(tag))
    if len(value) > (MAX_UID_LIST * 65 if vr == "UI" else MAX_VALUE_LENGTH):
        raise _invalid(f"{name}: value too long")
    text = value.strip(" ")
    if not text:
        return AttributeMatch(tag=tag, value="", kind="universal")
    if vr == "UI":
        return _parse_uid_list(tag, keyword, text)
    return _parse_single_value(tag, keyword, vr, text)


def _validated_path_uid(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    try:
        return validate_uid(value, what=what)
    except InvalidUIDError as exc:
        raise TesseraError(ErrorCode.INVALID_UID, str(exc)) from None


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
    response carries every attribute that was matched (§10.6.3.3). Parameters starting with
    ``_`` (cache busters) and the transport parameters ``accept``/``charset`` are ignored.
    """
    study_uid = _validated_path_uid(study_uid, "Study Instance UID")
    series_uid = _validated_path_uid(series_uid, "Series Instance UID")
    if series_uid is not None and (level is not QueryLevel.INSTANCE or study_uid is None):
        raise _invalid("a series in the path needs its study and an instance-level query")
    if study_uid is not None and level is QueryLevel.STUDY:
        raise _invalid("a study-level query cannot be scoped to a study")

    matches: dict[int, AttributeMatch] = {}
    include: dict[int, None] = {}
    include_all = False
    seen: set[str] = set()
    limit = min(default_limit, max_limit)
    offset = 0

    for name, value in params:
        if name.startswith("_") or name in _TRANSPORT_PARAMETERS:
            continue
        if name == "includefield":
            for item in value.split(","):
                field = item.strip()
                if field == "all":
                    include_all = True
                elif field:
                    head = field.split(".", 1)[0]
                    include[resolve_attribute(head, parameter="includefield")] = None
                else:
                    raise _invalid("includefield: empty attribute name")
            continue
        if name in ("limit", "offset", "fuzzymatching", "emptyvaluematching"):
            if name in seen:
                raise _invalid(f"{name} given more than once")
            seen.add(name)
            if name == "limit":
                limit = min(_parse_count("limit", value, upper=10**9), max_limit)
            elif name == "offset":
                offset = _parse_count("offset", value, upper=MAX_OFFSET)
            else:
                # Recorded only: literal matching is what is performed (§8.3.4.2, §8.3.4.3).
                _parse_flag(name, value)
            continue
        match = parse_match(level, name, value)
        if match.tag in matches:
            raise _invalid(f"{name}: {_keyword(match.tag)} given more than once")
        matches[match.tag] = match
        include[match.tag] = None

    return SearchRequest(
        level=level,
        study_uid=study_uid,
        series_uid=series_uid,
        matches=list(matches.values()),
        include_fields=list(include),
        include_all=include_all,
        limit=limit,
        offset=offset,
    )
