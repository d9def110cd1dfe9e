"""Match documents: the values of a level's attributes as matching compares them.

At indexing time each level's DICOM JSON (PS3.18 Annex F) is turned into one flat document,
``{key: [values]}``, normalized by the same functions that normalize query values
(``tessera_common.qido_values``), so both index backends match with plain comparisons:

==========================  ===========================================================
key                         values
==========================  ===========================================================
``GGGGEEEE``                strings stripped of padding; numbers as numbers; DA
                            ``YYYYMMDD``, TM ``HHMMSS.FFFFFF``, DT ``YYYYMMDDHHMMSS.FFFFFF``
                            (local); PN every component group, folded; SQ one match
                            document per item
``GGGGEEEE:A`` / ``:I`` /   a PN's Alphabetic / Ideographic / Phonetic groups, folded
``:P``
``GGGGEEEE:F``              a PN's words for fuzzy matching (accents removed, folded)
``GGGGEEEE:U``              DA (with its paired TM) and DT as UTC instants, only where the
                            zone is known (the DT's own offset or TimezoneOffsetFromUTC)
==========================  ===========================================================

An attribute that is present without values has ``[]``; an absent one has no key. Binary
values are left out. Long lists are cut at ``MAX_VALUES`` values or items, long texts at
``MAX_TEXT`` characters, sequences below ``MAX_DEPTH``: matching beyond those limits is not
supported (docs/CONFORMANCE.md).
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from typing import Any

from pydicom import datadict
from pydicom.datadict import DicomDictionary  # type: ignore[attr-defined]

from tessera_common.qido_values import (
    datetime_bounds,
    fold_name,
    name_tokens,
    parse_date,
    parse_offset,
    time_bounds,
    to_utc,
)

MAX_VALUES = 64
MAX_TEXT = 1024
MAX_DEPTH = 3

MatchDocument = dict[str, list[Any]]

_BINARY = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_NUMERIC = frozenset({"IS", "DS", "US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"})
_GROUPS = (("Alphabetic", "A"), ("Ideographic", "I"), ("Phonetic", "P"))
_TIMEZONE_KEY = "00080201"
#: Dates that are never shifted between time zones: a birth date is a calendar fact.
_UNZONED_DATES = frozenset({0x00100030, 0x00100032})


def _paired_times() -> dict[str, str]:
    """DA attribute → the TM attribute that completes it (``StudyDate`` → ``StudyTime``)."""
    pairs: dict[str, str] = {}
    for tag, entry in DicomDictionary.items():
        vr, keyword = entry[0], entry[4]
        if vr != "DA" or not keyword.endswith("Date") or tag in _UNZONED_DATES:
            continue
        time_tag = datadict.tag_for_keyword(keyword[:-4] + "Time")
        if time_tag is not None and datadict.dictionary_VR(time_tag) == "TM":
            pairs[f"{tag:08X}"] = f"{time_tag:08X}"
    return pairs


PAIRED_TIMES = _paired_times()


def dataset_timezone(dataset: Mapping[str, Any]) -> int | None:
    """The dataset's Timezone Offset From UTC (0008,0201) in minutes, None when absent or bad."""
    values = (dataset.get(_TIMEZONE_KEY) or {}).get("Value") or []
    if not values or not isinstance(values[0], str):
        return None
    try:
        return parse_offset(values[0])
    except ValueError:
        return None


def match_document(
    dataset: Mapping[str, Any],
    *,
    keys: Container[str] | None = None,
    timezone: int | None = None,
    depth: int = 0,
) -> MatchDocument:
    """The match document of ``dataset``'s attributes (all of them, or those in ``keys``).

    ``timezone`` is the zone of the dataset's local dates and times (``dataset_timezone`` of
    the instance), needed for the UTC keys.
    """
    document: MatchDocument = {}
    for key, attr in dataset.items():
        if keys is not None and key not in keys:
            continue
        if not isinstance(attr, Mapping) or len(key) != 8:
            continue
        vr = str(attr.get("vr", ""))
        if vr in _BINARY:
            continue
        values = attr.get("Value")
        values = values[:MAX_VALUES] if isinstance(values, list) else []
        if vr == "SQ":
            if depth + 1 < MAX_DEPTH:
                document[key] = [
                    match_document(item, timezone=timezone, depth=depth + 1)
                    for item in values
                    if isinstance(item, Mapping)
                ]
        elif vr == "PN":
            _person_names(document, key, values)
        elif vr in ("DA", "TM", "DT"):
            _date_times(document, key, vr, values, dataset, timezone)
        elif vr in _NUMERIC:
            document[key] = [
                v for v in values if isinstance(v, int | float) and not isinstance(v, bool)
            ]
        else:
            document[key] = [
                v.strip(" ")[:MAX_TEXT] for v in values if isinstance(v, str) and v.strip(" ")
            ]
    return document


def _person_names(document: MatchDocument, key: str, values: list[Any]) -> None:
    every: list[str] = []
    groups: dict[str, list[str]] = {}
    tokens: list[str] = []
    for value in values:
        if isinstance(value, str):
            value = {"Alphabetic": value}
        if not isinstance(value, Mapping):
            continue
        for name, letter in _GROUPS:
            text = value.get(name)
            if not isinstance(text, str) or not text.strip(" "):
                continue
            folded = fold_name(text)[:MAX_TEXT]
            if not folded:
                continue
            every.append(folded)
            groups.setdefault(letter, []).append(folded)
            tokens.extend(name_tokens(text))
    document[key] = list(dict.fromkeys(every))
    for letter, texts in groups.items():
        document[f"{key}:{letter}"] = texts
    if tokens:
        document[f"{key}:F"] = list(dict.fromkeys(tokens))


def _date_times(
    document: MatchDocument,
    key: str,
    vr: str,
    values: list[Any],
    dataset: Mapping[str, Any],
    timezone: int | None,
) -> None:
    local: list[str] = []
    instants: list[str] = []
    for value in values:
        if not isinstance(value, str) or not value.strip(" "):
            continue
        try:
            if vr == "DA":
                day = parse_date(value, lenient=True)
                local.append(day)
                if timezone is not None and key in PAIRED_TIMES:
                    instants.append(to_utc(day + _paired_time(dataset, key), timezone))
            elif vr == "TM":
                local.append(time_bounds(value)[0])
            else:
                start, _, own = datetime_bounds(value)
                local.append(start)
                zone = own if own is not None else timezone
                if zone is not None:
                    instants.append(to_utc(start, zone))
        except ValueError:
            continue
    document[key] = local
    if instants:
        document[f"{key}:U"] = instants


def _paired_time(dataset: Mapping[str, Any], date_key: str) -> str:
    values = (dataset.get(PAIRED_TIMES[date_key]) or {}).get("Value") or []
    if values and isinstance(values[0], str):
        try:
            return time_bounds(values[0])[0]
        except ValueError:
            pass
    return "000000.000000"


def first(document: MatchDocument, key: str) -> Any:
    """The first value of ``key``, or None: the value of a single-valued indexed column."""
    values = document.get(key)
    return values[0] if values else None
