"""Values as QIDO matching compares them: dates, times, person names (PS3.4 §C.2.2.2, PS3.5 §6.2).

Pure functions used on both sides of a match, so a query value and a stored value are always
normalized the same way:

- **DA** ``YYYYMMDD``; **TM** ``HHMMSS.FFFFFF`` (13 characters); **DT** ``YYYYMMDDHHMMSS.FFFFFF``
  (21 characters). Fixed width, so text order is time order and SQL/MongoDB compare them as
  strings. A value given with less precision stands for the whole interval it names
  (``time_bounds("10")`` is 10:00:00.000000 … 10:59:59.999999); stored values take the start.
- **UTC instants** are DT strings in UTC, for matching adjusted by ``TimezoneOffsetFromUTC``.
- **Person names** are folded for case-insensitive matching (NFKC, then Unicode case folding;
  trailing component separators dropped) and split into accent-free tokens for fuzzy matching.

Every parser raises ``ValueError`` with a short reason; the query parser turns it into a 400.
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from datetime import datetime, timedelta

TM_WIDTH = 13
DT_WIDTH = 21

_DA = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})")
_DA_LEGACY = re.compile(r"([0-9]{4})\.([0-9]{2})\.([0-9]{2})")
_TM = re.compile(r"([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})(?:\.([0-9]{1,6}))?)?)?")
_DT = re.compile(
    r"([0-9]{4})(?:([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})"
    r"(?:\.([0-9]{1,6}))?)?)?)?)?)?([+-][0-9]{4})?"
)
_OFFSET = re.compile(r"([+-])([0-9]{2})([0-9]{2})")
_NOT_WORD = re.compile(r"[\W_]+")

#: Smallest and largest offsets in use, PS3.3 §C.12.1.1.8 (-12:00 … +14:00).
MIN_OFFSET_MINUTES = -12 * 60
MAX_OFFSET_MINUTES = 14 * 60


def parse_offset(text: str) -> int:
    """A UTC offset ``&ZZXX`` (PS3.5 Table 6.2-1, DT) in minutes."""
    match = _OFFSET.fullmatch(text.strip(" "))
    if match is None:
        raise ValueError(f"{text!r} is not a UTC offset (+HHMM or -HHMM)")
    sign, hours, minutes = match.groups()
    if int(minutes) > 59:
        raise ValueError(f"{text!r} is not a UTC offset: minutes above 59")
    total = int(hours) * 60 + int(minutes)
    total = -total if sign == "-" else total
    if not MIN_OFFSET_MINUTES <= total <= MAX_OFFSET_MINUTES:
        raise ValueError(f"{text!r} is outside -1200 … +1400")
    return total


def parse_date(text: str, *, lenient: bool = False) -> str:
    """A DA value as ``YYYYMMDD``, checked against the calendar. ``lenient`` also accepts the
    ACR-NEMA form ``YYYY.MM.DD`` found in old stored data."""
    text = text.strip(" ")
    match = _DA.fullmatch(text) or (_DA_LEGACY.fullmatch(text) if lenient else None)
    if match is None:
        raise ValueError(f"{text!r} is not a date (YYYYMMDD)")
    year, month, day = (int(part) for part in match.groups())
    _check_date(year, month, day, text)
    return f"{year:04d}{month:02d}{day:02d}"


def _check_date(year: int, month: int, day: int, text: str) -> None:
    if year < 1 or not 1 <= month <= 12 or not 1 <= day <= calendar.monthrange(year, month)[1]:
        raise ValueError(f"{text!r} is not a calendar date")


def time_bounds(text: str) -> tuple[str, str]:
    """The first and last instant a TM value names, as ``HHMMSS.FFFFFF``.

    Colons (``HH:MM:SS``, an ACR-NEMA form) are tolerated; seconds may be 60 (leap second).
    """
    text = text.strip(" ").replace(":", "")
    match = _TM.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a time (HHMMSS.FFFFFF)")
    hours, minutes, seconds, fraction = match.groups()
    if int(hours) > 23 or (minutes and int(minutes) > 59) or (seconds and int(seconds) > 60):
        raise ValueError(f"{text!r} is not a time of day")
    low = f"{hours}{minutes or '00'}{seconds or '00'}.{(fraction or '').ljust(6, '0')}"
    high = f"{hours}{minutes or '59'}{seconds or '59'}.{(fraction or '').ljust(6, '9')}"
    return low, high


def datetime_bounds(text: str) -> tuple[str, str, int | None]:
    """The first and last local instant a DT value names (``YYYYMMDDHHMMSS.FFFFFF``), and its
    own UTC offset in minutes when it has one."""
    text = text.strip(" ")
    match = _DT.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a date-time (YYYYMMDDHHMMSS.FFFFFF&ZZXX)")
    year_s, month_s, day_s, hour_s, minute_s, second_s, fraction, zone = match.groups()
    year = int(year_s)
    low_month, high_month = (int(month_s), int(month_s)) if month_s else (1, 12)
    if not 1 <= low_month <= 12 or year < 1:
        raise ValueError(f"{text!r} is not a date-time: no such month")
    if day_s:
        low_day = high_day = int(day_s)
        _check_date(year, low_month, low_day, text)
    else:
        low_day, high_day = 1, calendar.monthrange(year, high_month)[1]
    clock = (hour_s or "") + (minute_s or "") + (second_s or "")
    if fraction:
        clock += "." + fraction
    if clock:
        low_clock, high_clock = time_bounds(clock)
    else:
        low_clock, high_clock = "000000.000000", "235959.999999"
    offset = parse_offset(zone) if zone else None
    low = f"{year:04d}{low_month:02d}{low_day:02d}{low_clock}"
    high = f"{year:04d}{high_month:02d}{high_day:02d}{high_clock}"
    return low, high, offset


def to_utc(local: str, offset_minutes: int) -> str:
    """A local DT instant (``YYYYMMDDHHMMSS.FFFFFF``) at ``offset_minutes`` east of UTC, in UTC.

    A leap second (60) counts as 59.999999; instants that would leave years 1 … 9999 are
    clamped to the ends of that range.
    """
    seconds = min(int(local[12:14]), 59)
    fraction = int(local[15:21]) if int(local[12:14]) < 60 else 999999
    moment = datetime(
        int(local[0:4]),
        int(local[4:6]),
        int(local[6:8]),
        int(local[8:10]),
        int(local[10:12]),
        seconds,
        fraction,
    )
    try:
        shifted = moment - timedelta(minutes=offset_minutes)
    except OverflowError:
        return "00010101000000.000000" if offset_minutes > 0 else "99991231235959.999999"
    return (
        f"{shifted.year:04d}{shifted.month:02d}{shifted.day:02d}{shifted.hour:02d}"
        f"{shifted.minute:02d}{shifted.second:02d}.{shifted.microsecond:06d}"
    )


def fold_name(text: str) -> str:
    """A person name component group as case-insensitive matching compares it (PS3.4
    §C.2.2.2.1 allows PN matching insensitive to case): NFKC (so half-width katakana equals
    full-width), Unicode case folding, no trailing spaces or empty trailing components."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return folded.strip(" ").rstrip("^ ")


def name_tokens(text: str) -> list[str]:
    """The words of a person name for fuzzy matching: accents removed, case folded, split at
    component separators, spaces and punctuation; in order of first appearance, no repeats."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    folded = unicodedata.normalize("NFKC", bare).casefold()
    return list(dict.fromkeys(token for token in _NOT_WORD.split(folded) if token))
