"""Incremental parser for ``multipart/related`` bodies (RFC 2046 §5.1.1, RFC 2387).

STOW-RS requests (PS3.18 §10.5) and multipart WADO-RS payloads (PS3.18 §8.6) are
``multipart/related`` bodies that may be gigabytes long, so the parser is fed chunks as they
arrive and reports events; it never holds a whole part. RFC 2046 §5.1.1 grammar, in short::

    body      = [preamble CRLF] dash-boundary padding CRLF body-part
                *( CRLF dash-boundary padding CRLF body-part )
                CRLF dash-boundary "--" padding [CRLF epilogue]
    body-part = headers [CRLF *OCTET]      ; ends at the CRLF of the next delimiter

State machine (one state per grammar region)::

    PREAMBLE --"--b" line--> HEADERS --blank line--> BODY --CRLF "--b" line--> HEADERS
        |                                             |
        +--------"--b--"-------> EPILOGUE <--"--b--"--+

* PREAMBLE discards bytes until a line that starts with ``--boundary``; the body is treated
  as if it began with a line break, so a boundary on the very first line counts.
* HEADERS collects the header lines up to the blank line, then emits ``PartStart``.
* BODY searches the buffer (``bytearray.find``) for the delimiter ``CRLF--boundary``. Bytes
  before a match, and bytes that cannot start one, go out at once as ``PartData``; only a
  possible delimiter prefix (under ``len(delimiter)`` bytes) is held back. The CRLF before
  the delimiter belongs to the delimiter, not to the data.
* EPILOGUE discards everything after the close delimiter ``--boundary--``.

After ``--boundary`` may come transport padding (spaces, tabs) and then the line break; any
other byte means the text only looked like a delimiter, and it stays data.

One leniency, on purpose: the line break that ends a boundary line or a header line may be a
bare LF (some clients send that), and so may the preamble's. Inside part bodies, which are
binary, only ``CRLF--boundary`` is a delimiter.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from tessera_gateway.mediatype import MediaType, MediaTypeError, parse_content_type

__all__ = [
    "Event",
    "MediaType",
    "MediaTypeError",
    "MultipartError",
    "MultipartParser",
    "PartData",
    "PartEnd",
    "PartStart",
    "iter_parts",
    "parse_content_type",
]

BOUNDARY_MAX_LENGTH = 70  # RFC 2046 §5.1.1: "1*70"
MAX_TRANSPORT_PADDING = 1024
_CR, _LF, _DASH = 0x0D, 0x0A, 0x2D
_PADDING_RE = re.compile(rb"[ \t]*")
_HEADER_END_RE = re.compile(rb"(?:\A|\n)\r?\n")
_HEADER_NAME_RE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class MultipartError(ValueError):
    """Raised when a body is not a well-formed ``multipart`` body, or exceeds a limit."""


class TooManyPartsError(MultipartError):
    """The body has more parts than ``max_parts``: the request as a whole is too large."""


@dataclass(frozen=True)
class PartStart:
    """A part begins; ``headers`` have lower-case names, repeated headers joined by ", "."""

    index: int
    headers: Mapping[str, str] = field(hash=False)


@dataclass(frozen=True)
class PartData:
    """Some bytes of the body of part ``index`` (never empty)."""

    index: int
    data: bytes


@dataclass(frozen=True)
class PartEnd:
    """Part ``index`` is complete."""

    index: int


Event = PartStart | PartData | PartEnd


class _State(enum.Enum):
    PREAMBLE = enum.auto()
    HEADERS = enum.auto()
    BODY = enum.auto()
    EPILOGUE = enum.auto()


class _After(enum.Enum):
    """What follows ``--boundary`` in the buffer."""

    LINE = enum.auto()  # padding and a line break: a delimiter line
    CLOSE = enum.auto()  # "--": the close delimiter
    NOT_DELIMITER = enum.auto()  # anything else: it was data after all
    NEED_MORE = enum.auto()  # the buffer ends too early to tell


class MultipartParser:
    """Push parser: ``feed()`` chunks of any size, then ``close()``; both return events.

    ``max_header_bytes`` bounds the header section of one part (blank line included) and
    ``max_parts`` the number of parts, so a hostile body cannot make the parser hold or emit
    without limit.
    """

    def __init__(
        self,
        boundary: bytes | str,
        *,
        max_header_bytes: int = 16 * 1024,
        max_parts: int = 10_000,
    ) -> None:
        self._boundary = _validate_boundary(boundary)
        self._delimiter = b"\r\n--" + self._boundary
        self._opening = b"\n--" + self._boundary
        self._max_header_bytes = max_header_bytes
        self._max_parts = max_parts
        self._state = _State.PREAMBLE
        self._buf = bytearray(b"\n")  # so that a boundary on the first line is found
        self._index = 0
        self._header_scan_from = 0
        self._closed = False

    @property
    def pending_bytes(self) -> int:
        """Bytes received but not yet emitted or discarded."""
        return len(self._buf)

    def feed(self, chunk: bytes) -> list[Event]:
        """Consume ``chunk`` and return the events it completes."""
        if self._closed:
            raise RuntimeError("MultipartParser.feed() after close()")
        self._buf += chunk
        events: list[Event] = []
        while self._step(events):
            pass
        return events

    def close(self) -> list[Event]:
        """Signal the end of the body; raise ``MultipartError`` unless it was complete."""
        self._closed = True
        closing = f"'--{self._boundary.decode('ascii')}--'"
        if self._state is _State.PREAMBLE:
            raise MultipartError(
                f"no opening boundary '--{self._boundary.decode('ascii')}' found in the body"
            )
        if self._state is _State.HEADERS:
            raise MultipartError(
                f"body ended in the headers of part {self._index} before the closing "
                f"delimiter {closing} (truncated request?)"
            )
        if self._state is _State.BODY:
            raise MultipartError(
                f"body ended inside part {self._index} before the closing delimiter {closing} "
                "(truncated request?)"
            )
        return []

    def _step(self, events: list[Event]) -> bool:
        """Advance the state machine once; False when more input is needed."""
        if self._state is _State.BODY:
            return self._step_body(events)
        if self._state is _State.HEADERS:
            return self._step_headers(events)
        if self._state is _State.PREAMBLE:
            return self._step_preamble()
        self._buf.clear()  # epilogue
        return False

    def _step_preamble(self) -> bool:
        buf = self._buf
        search = 0
        while (found := buf.find(self._opening, search)) >= 0:
            after, end = self._after_boundary(found + len(self._opening))
            if after is _After.NEED_MORE:
                del buf[:found]
                return False
            if after is _After.NOT_DELIMITER:
                search = found + 1
                continue
            del buf[:end]
            self._enter_part_or_epilogue(after)
            return True
        del buf[: self._held_back_from(self._opening, search)]
        return False

    def _step_headers(self, events: list[Event]) -> bool:
        buf = self._buf
        limit = self._max_header_bytes
        match = _HEADER_END_RE.search(buf, self._header_scan_from, limit)
        if match is None:
            if len(buf) >= limit:
                raise MultipartError(f"headers of part {self._index} are larger than {limit} bytes")
            self._header_scan_from = max(0, len(buf) - 2)
            return False
        headers = _parse_headers(bytes(buf[: match.start()]), self._index)
        del buf[: match.end()]
        self._header_scan_from = 0
        events.append(PartStart(self._index, headers))
        self._state = _State.BODY
        return True

    def _step_body(self, events: list[Event]) -> bool:
        buf = self._buf
        search = 0
        while (found := buf.find(self._delimiter, search)) >= 0:
            after, end = self._after_boundary(found + len(self._delimiter))
            if after is _After.NEED_MORE:
                self._emit(found, events)
                return False
            if after is _After.NOT_DELIMITER:
                search = found + 1
                continue
            self._emit(found, events)
            del buf[: end - found]
            events.append(PartEnd(self._index))
            self._index += 1
            self._enter_part_or_epilogue(after)
            return True
        self._emit(self._held_back_from(self._delimiter, search), events)
        return False

    def _enter_part_or_epilogue(self, after: _After) -> None:
        if after is _After.CLOSE:
            self._state = _State.EPILOGUE
            return
        if self._index >= self._max_parts:
            raise TooManyPartsError(f"more than {self._max_parts} parts in one multipart body")
        self._state = _State.HEADERS

    def _emit(self, end: int, events: list[Event]) -> None:
        """Emit ``buf[:end]`` as data of the current part and drop it from the buffer."""
        if end <= 0:
            return
        with memoryview(self._buf) as view:
            data = view[:end].tobytes()
        del self._buf[:end]
        events.append(PartData(self._index, data))

    def _held_back_from(self, token: bytes, search: int) -> int:
        """Index of the first byte of the buffer's tail that may still begin ``token``."""
        buf = self._buf
        pos = max(search, len(buf) - len(token) + 1)
        while (pos := buf.find(token[0], pos)) >= 0:
            if token.startswith(buf[pos:]):
                return pos
            pos += 1
        return len(buf)

    def _after_boundary(self, pos: int) -> tuple[_After, int]:
        """Classify the bytes after ``--boundary`` at ``pos``; also return where they end."""
        buf = self._buf
        size = len(buf)
        if pos >= size:
            return _After.NEED_MORE, pos
        if buf[pos] == _DASH:
            if pos + 1 >= size:
                return _After.NEED_MORE, pos
            if buf[pos + 1] == _DASH:
                return _After.CLOSE, pos + 2
            return _After.NOT_DELIMITER, pos
        padding = _PADDING_RE.match(buf, pos, pos + MAX_TRANSPORT_PADDING + 1)
        end = padding.end() if padding is not None else pos
        if end - pos > MAX_TRANSPORT_PADDING:
            raise MultipartError(
                f"more than {MAX_TRANSPORT_PADDING} bytes of transport padding after a boundary"
            )
        if end >= size:
            return _After.NEED_MORE, pos
        if buf[end] == _LF:
            return _After.LINE, end + 1
        if buf[end] == _CR:
            if end + 1 >= size:
                return _After.NEED_MORE, pos
            if buf[end + 1] == _LF:
                return _After.LINE, end + 2
        return _After.NOT_DELIMITER, pos


def iter_parts(
    body: bytes,
    boundary: bytes | str,
    *,
    max_header_bytes: int = 16 * 1024,
    max_parts: int = 10_000,
) -> list[tuple[dict[str, str], bytes]]:
    """Parse a whole (small) body into ``(headers, data)`` pairs; for tests and tiny bodies."""
    parser = MultipartParser(boundary, max_header_bytes=max_header_bytes, max_parts=max_parts)
    parts: list[tuple[dict[str, str], bytearray]] = []
    for event in [*parser.feed(body), *parser.close()]:
        if isinstance(event, PartStart):
            parts.append((dict(event.headers), bytearray()))
        elif isinstance(event, PartData):
            parts[-1][1].extend(event.data)
    return [(headers, bytes(data)) for headers, data in parts]


def _validate_boundary(boundary: bytes | str) -> bytes:
    """RFC 2046 §5.1.1: 1 to 70 characters; we also refuse non-ASCII and control bytes."""
    if isinstance(boundary, str):
        try:
            boundary = boundary.encode("ascii")
        except UnicodeEncodeError:
            raise MultipartError(f"boundary {boundary!r} is not ASCII") from None
    if not 1 <= len(boundary) <= BOUNDARY_MAX_LENGTH:
        raise MultipartError(
            f"boundary must be 1 to {BOUNDARY_MAX_LENGTH} characters long, "
            f"got {len(boundary)} (RFC 2046 §5.1.1)"
        )
    if any(byte < 0x20 or byte > 0x7E for byte in boundary):
        raise MultipartError(f"boundary {boundary!r} contains control or non-ASCII bytes")
    return bytes(boundary)


def _parse_headers(block: bytes, index: int) -> Mapping[str, str]:
    """Header lines (CRLF or bare LF) into a mapping; folded lines are unfolded (RFC 5322)."""
    headers: dict[str, str] = {}
    last: str | None = None
    for raw_line in block.split(b"\n") if block else []:
        line = raw_line[:-1] if raw_line.endswith(b"\r") else raw_line
        if line[:1] in (b" ", b"\t"):
            if last is None:
                raise MultipartError(f"part {index}: header section starts with a folded line")
            headers[last] = f"{headers[last]} {_decode(line.strip())}"
            continue
        name, colon, value = line.partition(b":")
        name = name.rstrip(b" \t")
        if not colon or _HEADER_NAME_RE.fullmatch(name) is None:
            raise MultipartError(f"part {index}: malformed header line {_shown(line)}")
        key = name.decode("ascii").lower()
        text = _decode(value.strip(b" \t"))
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
        last = key
    return MappingProxyType(headers)


def _decode(value: bytes) -> str:
    """Header values are ASCII in practice; UTF-8 is accepted, anything else kept as Latin-1."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def _shown(line: bytes) -> str:
    return repr(line if len(line) <= 80 else line[:80] + b"...")
