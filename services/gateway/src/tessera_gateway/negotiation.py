"""Content negotiation on the ``Accept`` header (RFC 9110 §12.5.1, PS3.18 §8.7).

``parse_accept`` turns the header into ``AcceptItem`` values, best first; ``choose`` picks
the representation a resource offers that the client prefers. A media range's parameters
other than ``q`` are kept in ``media_type.params``: DICOM negotiates with them
(``multipart/related; type="application/dicom"; transfer-syntax=*``, PS3.18 §8.7.3), and the
transaction module reads them from the items that ``matching`` returns.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from tessera_gateway.mediatype import (
    MediaType,
    MediaTypeError,
    parse_content_type,
    parse_media_range,
)

_QVALUE_RE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")  # RFC 9110 §12.4.2
# Pieces of a comma-separated list: text, a quoted string (commas inside do not split), a comma.
_LIST_PIECE_RE = re.compile(r'[^,"]+|"(?:\\.|[^"\\])*(?:"|$)|,|.', re.DOTALL)

ANY = MediaType("*", "*")


@dataclass(frozen=True)
class AcceptItem:
    """One media range of an ``Accept`` header with its weight ``q`` (0 to 1)."""

    media_type: MediaType
    q: float = 1.0

    @property
    def acceptable(self) -> bool:
        """``q=0`` means "not acceptable" (RFC 9110 §12.4.2)."""
        return self.q > 0

    @property
    def specificity(self) -> int:
        """0 for ``*/*``, 1 for ``type/*``, 2 for ``type/subtype``; more specific ranges win."""
        if self.media_type.type == "*":
            return 0
        return 1 if self.media_type.subtype == "*" else 2

    def matches(self, type: str, subtype: str) -> bool:
        """True when this range covers ``type/subtype`` (compared case-insensitively)."""
        range_type, range_subtype = self.media_type.type, self.media_type.subtype
        if range_type == "*":
            return True
        if range_type != type.lower():
            return False
        return range_subtype in ("*", subtype.lower())


def parse_accept(header: str | None) -> list[AcceptItem]:
    """Parse an ``Accept`` value, sorted by ``q`` descending (stable for equal ``q``).

    No header, or an empty one, accepts anything (``*/*``). Items that do not parse, or whose
    ``q`` is not a valid qvalue, are skipped: one bad item does not void the header. Items with
    ``q=0`` are kept because they exclude what a wider range would allow.
    """
    if header is None or not header.strip():
        return [AcceptItem(ANY)]
    return list(_parse_accept(header))


@functools.lru_cache(maxsize=256)
def _parse_accept(header: str) -> tuple[AcceptItem, ...]:
    """``parse_accept`` of a non-empty header; clients send the same few headers again and
    again, and parsing one costs more than the rest of a frame request's negotiation."""
    items: list[AcceptItem] = []
    for text in _split_list(header):
        try:
            media_range = parse_media_range(text)
        except MediaTypeError:
            continue
        params = dict(media_range.params)
        weight = params.pop("q", "1")
        if _QVALUE_RE.fullmatch(weight) is None:
            continue
        media_type = MediaType(media_range.type, media_range.subtype, params)
        items.append(AcceptItem(media_type, float(weight)))
    return tuple(sorted(items, key=lambda item: -item.q))


def quality(accept: Sequence[AcceptItem], essence: str) -> float:
    """The weight the client gives to ``essence`` (``type/subtype``); 0 when not acceptable.

    The most specific matching ranges decide (RFC 9110 §12.5.1): with
    ``*/*, application/dicom;q=0``, ``application/dicom`` is refused.
    """
    media_type = parse_content_type(essence)
    matched = [item for item in accept if item.matches(media_type.type, media_type.subtype)]
    if not matched:
        return 0.0
    most_specific = max(item.specificity for item in matched)
    return max(item.q for item in matched if item.specificity == most_specific)


def matching(accept: Sequence[AcceptItem], essence: str) -> list[AcceptItem]:
    """Acceptable items that cover ``essence``, best first (``q``, then specificity).

    For reading DICOM parameters: the WADO-RS module walks these to find a ``transfer-syntax``
    it can deliver.
    """
    media_type = parse_content_type(essence)
    found = [
        item
        for item in accept
        if item.acceptable and item.matches(media_type.type, media_type.subtype)
    ]
    return sorted(found, key=lambda item: (-item.q, -item.specificity))


def choose(accept: Sequence[AcceptItem], offered: Sequence[str]) -> str | None:
    """The offered media type the client prefers, ``None`` if none is acceptable (→ 406).

    Ties in weight go to the earlier entry of ``offered``, so list the server's favourite first.
    """
    best: str | None = None
    best_q = 0.0
    for candidate in offered:
        weight = quality(accept, candidate)
        if weight > best_q:
            best, best_q = candidate, weight
    return best


def _split_list(header: str) -> list[str]:
    """Split a comma-separated header on commas outside quoted strings; drop empty items."""
    items: list[str] = []
    current: list[str] = []
    for piece in _LIST_PIECE_RE.findall(header):
        if piece == ",":
            items.append("".join(current))
            current = []
        else:
            current.append(piece)
    items.append("".join(current))
    return [item.strip() for item in items if item.strip()]
