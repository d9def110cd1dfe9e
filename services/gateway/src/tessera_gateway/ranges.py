"""HTTP byte ranges (RFC 9110 §14): one ``bytes`` range of a value of known size.

Bulk data values are served whole or, when asked, in part (PS3.18 §8.3.5.1 allows Range for
bulk data). Only a single range is honoured; a header that is not one valid ``bytes`` range
is ignored (RFC 9110 §14.2 lets a server ignore Range), and the whole value is sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_RANGE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*")


class RangeNotSatisfiableError(ValueError):
    """The range starts beyond the value (416, RFC 9110 §15.5.17)."""


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int  # exclusive

    @property
    def length(self) -> int:
        return self.end - self.start

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end - 1}/{size}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The range of a ``size``-byte value that ``header`` asks for, or None for all of it."""
    if not header:
        return None
    match = _RANGE.fullmatch(header)
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # a suffix: the last N bytes
        count = int(last)
        if count == 0:
            raise RangeNotSatisfiableError(header)
        return ByteRange(max(size - count, 0), size)
    start = int(first)
    end = size if not last else min(int(last) + 1, size)
    if last and int(last) < start:
        return None  # invalid, so ignored
    if start >= size:
        raise RangeNotSatisfiableError(header)
    return ByteRange(start, end)
