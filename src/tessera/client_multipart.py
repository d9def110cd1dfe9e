"""``multipart/related`` framing for the client side of STOW-RS and WADO-RS (RFC 2046 §5.1,
RFC 2387, PS3.18 §8.6.1.2).

Pure: no I/O. :func:`part_head` and :func:`close_delimiter` frame a request body whose part
contents are streamed by the caller (so a body's exact length is known before it is sent);
:class:`MultipartParser` splits a response body that arrives in chunks of any size into
part events, holding back at most one delimiter's worth of bytes.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

CRLF = b"\r\n"
_BOUNDARY_CHARS = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")


class MultipartError(ValueError):
    """The body is not well-formed ``multipart/related``."""


def new_boundary() -> str:
    """A random boundary (RFC 2046 §5.1.1: at most 70 characters); 128 random bits make a
    collision with a part's content negligible."""
    return f"tessera-{secrets.token_hex(16)}"


def check_boundary(boundary: str) -> str:
    """``boundary`` unchanged when RFC 2046 §5.1.1 allows it, else ``MultipartError``."""
    if not _BOUNDARY_CHARS.fullmatch(boundary):
        raise MultipartError(f"invalid multipart boundary {boundary[:80]!r}")
    return boundary


def related_content_type(boundary: str, part_type: str = "application/dicom") -> str:
    """The request's ``Content-Type`` (PS3.18 §10.5.1.2, RFC 2387 §3.1)."""
    return f'multipart/related; type="{part_type}"; boundary={boundary}'


def part_head(boundary: str, content_type: str = "application/dicom") -> bytes:
    """The bytes before a part's content: the delimiter and the part's header section."""
    return f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode("ascii")


def close_delimiter(boundary: str) -> bytes:
    """The bytes after the last part's content (ending it) that close the body."""
    return f"\r\n--{boundary}--\r\n".encode("ascii")


def part_separator(boundary: str, content_type: str = "application/dicom") -> bytes:
    """The bytes between two parts' contents."""
    return CRLF + part_head(boundary, content_type)


def body_length(boundary: str, sizes: list[int], content_type: str = "application/dicom") -> int:
    """Exact length of the body framing parts of ``sizes`` bytes (for ``Content-Length``)."""
    if not sizes:
        raise MultipartError("a multipart body needs at least one part")
    head = len(part_head(boundary, content_type))
    framing = head + (len(sizes) - 1) * (len(CRLF) + head) + len(close_delimiter(boundary))
    return framing + sum(sizes)


def boundary_of(content_type: str) -> str:
    """The ``boundary`` parameter of a ``multipart/*`` ``Content-Type`` header value."""
    media, _, params = content_type.partition(";")
    if not media.strip().lower().startswith("multipart/"):
        raise MultipartError(f"not a multipart response: {media.strip()[:80]!r}")
    for name, value in _parameters(params):
        if name == "boundary":
            return check_boundary(value)
    raise MultipartError("the multipart Content-Type has no boundary")


def _parameters(text: str) -> Iterator[tuple[str, str]]:
    """``name=value`` pairs of header parameters (RFC 9110 §5.6.6), quoted strings unquoted."""
    for match in re.finditer(r'\s*([^=;\s]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)\s*(?:;|$)', text):
        name, value = match.group(1).lower(), match.group(2).strip()
        if value.startswith('"') and value.endswith('"') and len(value) >= 2:
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        yield name, value


# --- parsing ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PartStart:
    """A part begins; ``headers`` names are lower-case."""

    headers: Mapping[str, str]


@dataclass(frozen=True)
class PartData:
    data: bytes


@dataclass(frozen=True)
class PartEnd:
    pass


PartEvent = PartStart | PartData | PartEnd

MAX_HEADER_BYTES = 64 * 1024
"""Longest header section of one part accepted from a server."""


class MultipartParser:
    """Incremental ``multipart/related`` reader: :meth:`feed` chunks, :meth:`finish` at the end.

    The first delimiter may open the body or follow a preamble (RFC 2046 §5.1.1); a delimiter
    line may carry transport padding; the epilogue after the close delimiter is ignored.
    """

    def __init__(self, boundary: str) -> None:
        self._delimiter = CRLF + b"--" + check_boundary(boundary).encode("ascii")
        self._buffer = bytearray(CRLF)  # so that a delimiter at the very start matches too
        self._state = "preamble"

    @property
    def closed(self) -> bool:
        """True once the close delimiter was read."""
        return self._state == "epilogue"

    def feed(self, chunk: bytes) -> Iterator[PartEvent]:
        """The events ``chunk`` completes, in order."""
        if self._state == "epilogue":
            return
        self._buffer += chunk
        while True:
            if self._state in ("preamble", "data"):
                found = self._buffer.find(self._delimiter)
                if found < 0:
                    keep = len(self._delimiter) - 1
                    if self._state == "data" and len(self._buffer) > keep:
                        yield PartData(bytes(self._buffer[:-keep]))
                        del self._buffer[:-keep]
                    elif self._state == "preamble" and len(self._buffer) > keep:
                        del self._buffer[:-keep]
                    return
                if self._state == "data":
                    if found:
                        yield PartData(bytes(self._buffer[:found]))
                    yield PartEnd()
                del self._buffer[: found + len(self._delimiter)]
                self._state = "delimiter"
            if self._state == "delimiter":
                line_end = self._buffer.find(CRLF)
                if line_end < 0:
                    if self._buffer.startswith(b"--"):
                        self._state = "epilogue"
                        self._buffer.clear()
                        return
                    if len(self._buffer) > 1024:
                        raise MultipartError("a delimiter line does not end")
                    return
                line = bytes(self._buffer[:line_end])
                if line.startswith(b"--"):
                    self._state = "epilogue"
                    self._buffer.clear()
                    return
                if line.strip(b" \t"):
                    raise MultipartError("unexpected bytes after a multipart delimiter")
                del self._buffer[: line_end + len(CRLF)]
                self._state = "headers"
            if self._state == "headers":
                if self._buffer.startswith(CRLF):
                    head_end, head = 0, b""
                else:
                    head_end = self._buffer.find(CRLF + CRLF)
                    if head_end < 0:
                        if len(self._buffer) > MAX_HEADER_BYTES:
                            raise MultipartError("a part's header section is too long")
                        return
                    head = bytes(self._buffer[:head_end])
                    head_end += len(CRLF)
                del self._buffer[: head_end + len(CRLF)]
                yield PartStart(parse_headers(head))
                self._state = "data"

    def finish(self) -> None:
        """Raise ``MultipartError`` when the body ended before its close delimiter."""
        if self._state != "epilogue":
            raise MultipartError("the multipart body ended before its close delimiter")


def parse_headers(head: bytes) -> dict[str, str]:
    """A part's header section (RFC 5322 fields, folded lines joined) by lower-case name."""
    headers: dict[str, str] = {}
    name = ""
    for raw in head.decode("latin-1").split("\r\n"):
        if not raw:
            continue
        if raw[0] in " \t" and name:
            headers[name] += " " + raw.strip()
            continue
        field, colon, value = raw.partition(":")
        if not colon or not field.strip():
            raise MultipartError(f"malformed part header line {raw[:80]!r}")
        name = field.strip().lower()
        headers[name] = value.strip()
    return headers
