"""One matching key's value turned into terms, by matching type (PS3.4 §C.2.2.2).

One function per matching type, chosen from the attribute's VR and the value's form:

===================  ================================================  ===================
matching type        query form                                        VRs
===================  ================================================  ===================
Single Value         a value without wildcards or range                every matchable VR
List of UID          UIDs separated by ``\\`` or ``,``                    UI
Universal            empty, or only ``*``                              every VR
Wildcard             ``*`` (any run) and ``?`` (one character)         AE CS LO LT PN SH ST
                                                                       UC UR UT
Range                ``low-high``, ``low-``, ``-high``                 DA TM DT
Empty Value          ``""`` (two double quotes)                        every VR
Multiple Value       values separated by ``\\`` (``,`` too for CS)      every VR
Fuzzy (PS3.18)       ``fuzzymatching=true``                            PN
===================  ================================================  ===================

Pure: raises ``ValueError`` with the reason, which the parser reports as a 400.
"""

from __future__ import annotations

import re
from typing import Literal

from tessera_common.messages import AttributeMatch, MatchTerm
from tessera_common.qido_values import (
    datetime_bounds,
    fold_name,
    name_tokens,
    parse_date,
    time_bounds,
    to_utc,
)
from tessera_common.uid import is_valid_uid

#: VRs for which ``*`` and ``?`` are wildcards (PS3.4 §C.2.2.2.4).
WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
#: VRs for which ``-`` denotes a range (PS3.4 §C.2.2.2.5).
RANGE_VRS = frozenset({"DA", "TM", "DT"})
INTEGER_VRS = frozenset({"IS", "US", "SS", "UL", "SL", "UV", "SV"})
DECIMAL_VRS = frozenset({"DS", "FL", "FD"})
#: Text VRs matched as given (no wildcards): Age String, Attribute Tag handled apart.
PLAIN_TEXT_VRS = frozenset({"AS"})
#: VRs that cannot be matched: bulk and binary data (PS3.18 §10.6.1.2).
UNMATCHABLE_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})

MAX_UID_LIST = 1000
EMPTY_VALUE = '""'

_INTEGER = re.compile(r"[+-]?[0-9]{1,20}")
_DECIMAL = re.compile(r"[+-]?([0-9]{1,20}(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,3})?")
_HEX_TAG = re.compile(r"[0-9A-Fa-f]{8}")
_UID_SEPARATORS = re.compile(r"[,\\]")
_ONLY_STARS = re.compile(r"\*+")
_GROUPS: tuple[Literal["A", "I", "P"], ...] = ("A", "I", "P")


def _kind_of(terms: list[MatchTerm]) -> str:
    if len(terms) > 1:
        return "multiple"
    kind = terms[0].kind
    return "single" if kind == "groups" else kind


def match_value(
    tag: int,
    vr: str,
    text: str,
    *,
    fuzzy: bool = False,
    timezone: int | None = None,
    empty_value_matching: bool = False,
) -> AttributeMatch:
    """The ``AttributeMatch`` for ``{attribute}={text}`` on an attribute of ``vr``.

    ``timezone`` (minutes east of UTC, from ``TimezoneOffsetFromUTC``) makes DA and DT
    values zone-adjusted; ``fuzzy`` applies to PN; ``empty_value_matching`` lets every key
    with values also match empty or absent attributes (except UIDs, which identify).
    """
    value = text.strip(" ")
    if not value or _ONLY_STARS.fullmatch(value):
        return AttributeMatch(tag=tag, value=value, kind="universal", vr=vr)
    if vr in UNMATCHABLE_VRS:
        raise ValueError(f"values of VR {vr} cannot be matched")
    if vr == "SQ":
        raise ValueError("a sequence is matched through its attributes (Sequence.Attribute=value)")
    if value == EMPTY_VALUE:
        return AttributeMatch(tag=tag, value=value, kind="empty", vr=vr)
    if vr == "UI":
        return _uid_list(tag, value)
    separators = r"[\\,]" if vr == "CS" else r"\\"
    components = [part.strip(" ") for part in re.split(separators, value)]
    if any(not part for part in components):
        raise ValueError("an empty value in a list of values")
    terms: list[MatchTerm] = []
    for component in components:
        term = _term(vr, component, fuzzy=fuzzy, timezone=timezone)
        if term is None:  # a component such as "*" matches everything
            return AttributeMatch(tag=tag, value=value, kind="universal", vr=vr)
        terms.append(term)
    return AttributeMatch(
        tag=tag,
        value=value,
        kind=_kind_of(terms),  # type: ignore[arg-type]
        vr=vr,
        terms=terms,
        or_empty=empty_value_matching,
    )


def _uid_list(tag: int, value: str) -> AttributeMatch:
    """List of UID Matching (PS3.4 §C.2.2.2.2): UIDs separated by ``\\`` or ``,``."""
    parts = [part.strip(" ") for part in _UID_SEPARATORS.split(value)]
    if len(parts) > MAX_UID_LIST:
        raise ValueError(f"at most {MAX_UID_LIST} UIDs may be listed")
    for part in parts:
        if not is_valid_uid(part):
            shown = part if len(part) <= 80 and part.isprintable() else repr(part[:80])
            raise UIDValueError(f"{shown!r} is not a valid DICOM UID")
    unique = list(dict.fromkeys(parts))
    if len(unique) == 1:
        return AttributeMatch(
            tag=tag,
            value=unique[0],
            kind="single",
            vr="UI",
            terms=[MatchTerm(kind="single", text=unique[0])],
        )
    return AttributeMatch(tag=tag, value="\\".join(unique), kind="uid_list", vr="UI")


class UIDValueError(ValueError):
    """A UID in a query value is not a valid UID (reported as ``invalid-uid``)."""


def _term(vr: str, value: str, *, fuzzy: bool, timezone: int | None) -> MatchTerm | None:
    if vr == "PN":
        return _person_name(value, fuzzy=fuzzy)
    if vr in RANGE_VRS:
        return _date_time(vr, value, timezone)
    if vr in WILDCARD_VRS:
        if "*" in value or "?" in value:
            return MatchTerm(kind="wildcard", text=value)
        return MatchTerm(kind="single", text=value)
    if vr in INTEGER_VRS:
        if not _INTEGER.fullmatch(value):
            raise ValueError(f"{_shown(value)} is not an integer")
        return MatchTerm(kind="single", number=int(value))
    if vr in DECIMAL_VRS:
        if not _DECIMAL.fullmatch(value):
            raise ValueError(f"{_shown(value)} is not a decimal number")
        number = float(value)
        return MatchTerm(kind="single", number=int(number) if number.is_integer() else number)
    if vr == "AT":
        if not _HEX_TAG.fullmatch(value):
            raise ValueError(f"{_shown(value)} is not an attribute tag (8 hex digits)")
        return MatchTerm(kind="single", text=value.upper())
    if vr in PLAIN_TEXT_VRS:
        return MatchTerm(kind="single", text=value)
    raise ValueError(f"values of VR {vr} cannot be matched")


def _person_name(value: str, *, fuzzy: bool) -> MatchTerm | None:
    """PN: case-insensitive literal or wildcard matching of the folded name, per component group
    when the value has ``=``; with fuzzy matching, token-prefix matching."""
    if fuzzy:
        tokens = name_tokens(value)
        return MatchTerm(kind="fuzzy", tokens=tokens) if tokens else None
    if "=" not in value:
        return _name_pattern(fold_name(value), None)
    groups = value.split("=")
    if len(groups) > 3:
        raise ValueError(f"{_shown(value)} has more than three component groups")
    parts = [
        term
        for group, text in zip(_GROUPS, groups, strict=False)
        if (term := _name_pattern(fold_name(text), group)) is not None
    ]
    if not parts:
        return None
    return MatchTerm(kind="groups", parts=parts)


def _name_pattern(folded: str, group: Literal["A", "I", "P"] | None) -> MatchTerm | None:
    if not folded or _ONLY_STARS.fullmatch(folded):
        return None
    kind: Literal["single", "wildcard"] = "wildcard" if "*" in folded or "?" in folded else "single"
    return MatchTerm(kind=kind, text=folded, group=group)


def _split_range(vr: str, value: str) -> tuple[str, str] | None:
    """``(low, high)`` texts when ``value`` is a range, None for a single value.

    DT values contain ``-`` in negative UTC offsets: a value that is one valid DT is single;
    otherwise the split whose sides are both valid (or empty) is the range.
    """
    if "-" not in value:
        return None
    if vr != "DT":
        if value.count("-") > 1:
            raise ValueError(f"{_shown(value)} is not a range (one '-' between two values)")
        low, high = value.split("-")
        return low.strip(" "), high.strip(" ")
    try:
        datetime_bounds(value)
        return None
    except ValueError:
        pass
    for index, char in enumerate(value):
        if char != "-":
            continue
        low, high = value[:index].strip(" "), value[index + 1 :].strip(" ")
        try:
            for side in (low, high):
                if side:
                    datetime_bounds(side)
        except ValueError:
            continue
        return low, high
    raise ValueError(f"{_shown(value)} is not a date-time or a range of them")


def _bounds(vr: str, text: str) -> tuple[str, str, int | None]:
    if vr == "DA":
        day = parse_date(text)
        return day, day, None
    if vr == "TM":
        low, high = time_bounds(text)
        return low, high, None
    return datetime_bounds(text)


def _date_time(vr: str, value: str, timezone: int | None) -> MatchTerm:
    """Range Matching (PS3.4 §C.2.2.2.5) of DA, TM and DT; a single value is the range of the
    interval it names. DA and DT are compared as UTC instants when a zone is known for the
    query (``TimezoneOffsetFromUTC`` or the DT value's own offset); TM is compared as given."""
    split = _split_range(vr, value)
    texts = split if split is not None else (value, value)
    if not texts[0] and not texts[1]:
        raise ValueError("a range needs at least one end")
    low = high = None
    low_zone = high_zone = None
    if texts[0]:
        low, _, low_zone = _bounds(vr, texts[0])
    if texts[1]:
        _, high, high_zone = _bounds(vr, texts[1])
    low_zone = low_zone if low_zone is not None else timezone
    high_zone = high_zone if high_zone is not None else timezone
    if vr == "TM" or (low_zone is None and high_zone is None):
        if low is not None and high is not None and low > high:
            raise ValueError(f"{_shown(value)} is an impossible range: it ends before it starts")
        return MatchTerm(kind="range", low=low, high=high)
    utc_low = _utc(vr, low, low_zone, start=True)
    utc_high = _utc(vr, high, high_zone, start=False)
    if utc_low is not None and utc_high is not None and utc_low > utc_high:
        raise ValueError(f"{_shown(value)} is an impossible range: it ends before it starts")
    return MatchTerm(
        kind="range", low=low, high=high, zoned=True, utc_low=utc_low, utc_high=utc_high
    )


def _utc(vr: str, bound: str | None, zone: int | None, *, start: bool) -> str | None:
    if bound is None:
        return None
    if vr == "DA":
        bound += "000000.000000" if start else "235959.999999"
    return to_utc(bound, zone or 0)


def _shown(text: str) -> str:
    return repr(text if len(text) <= 64 else text[:64] + "…")
