"""Streaming ``multipart/related`` parser (RFC 2046 §5.1.1) and ``Content-Type`` parsing."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import pytest

from tessera_gateway.multipart import (
    Event,
    MediaType,
    MediaTypeError,
    MultipartError,
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
    iter_parts,
    parse_content_type,
)

Parts = list[tuple[dict[str, str], bytes]]
DICOM = {"content-type": "application/dicom"}


# --- Content-Type ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContentTypeCase:
    id: str
    header: str
    type: str
    subtype: str
    params: Mapping[str, str] = field(default_factory=dict)


CONTENT_TYPES = [
    ContentTypeCase("bare essence", "application/dicom", "application", "dicom"),
    ContentTypeCase("case folded", "Multipart/Related", "multipart", "related"),
    ContentTypeCase(
        "STOW with quoted params",
        'multipart/related; type="application/dicom"; boundary="a b;c"',
        "multipart",
        "related",
        {"type": "application/dicom", "boundary": "a b;c"},
    ),
    ContentTypeCase(
        "backslash escapes in a quoted value",
        r'multipart/related; boundary="q\"uo\\te"',
        "multipart",
        "related",
        {"boundary": 'q"uo\\te'},
    ),
    ContentTypeCase(
        "unquoted values, one with '/' and '='",
        "multipart/related;type=application/dicom;boundary=----=_Part_1",
        "multipart",
        "related",
        {"type": "application/dicom", "boundary": "----=_Part_1"},
    ),
    ContentTypeCase(
        "whitespace around ';' and '='",
        "  multipart/related \t;  type = application/dicom ;boundary= x  ",
        "multipart",
        "related",
        {"type": "application/dicom", "boundary": "x"},
    ),
    ContentTypeCase(
        "parameter names lower-cased, values kept",
        "application/dicom+json; Charset=UTF-8",
        "application",
        "dicom+json",
        {"charset": "UTF-8"},
    ),
    ContentTypeCase("empty parameters ignored", "text/plain;;", "text", "plain"),
    ContentTypeCase("empty quoted value", 'text/plain; x=""', "text", "plain", {"x": ""}),
]


@pytest.mark.parametrize("case", CONTENT_TYPES, ids=[case.id for case in CONTENT_TYPES])
def test_parse_content_type(case: ContentTypeCase) -> None:
    media_type = parse_content_type(case.header)
    assert media_type == MediaType(case.type, case.subtype, case.params)
    assert media_type.essence == f"{case.type}/{case.subtype}"


BAD_CONTENT_TYPES = [
    ("empty", ""),
    ("no subtype", "application"),
    ("space inside essence", "application / dicom"),
    ("garbage", "<<<>>>"),
    ("text after essence", "application/dicom garbage"),
    ("parameter without value", "text/plain; charset"),
    ("parameter with empty value", "text/plain; charset="),
    ("unterminated quote", 'multipart/related; boundary="abc'),
    ("repeated parameter", "text/plain; a=1; a=2"),
    ("wildcard", "*/*"),
    ("subtype wildcard", "application/*"),
]


@pytest.mark.parametrize(
    "header", [h for _, h in BAD_CONTENT_TYPES], ids=[i for i, _ in BAD_CONTENT_TYPES]
)
def test_parse_content_type_rejects(header: str) -> None:
    with pytest.raises(MediaTypeError, match="invalid media type"):
        parse_content_type(header)


def test_media_type_str_round_trips() -> None:
    header = 'multipart/related; type="application/dicom"; boundary="a b;c\\"d"'
    media_type = parse_content_type(header)
    assert str(media_type) == header
    assert parse_content_type(str(media_type)) == media_type


# --- multipart bodies ------------------------------------------------------------------------


@dataclass(frozen=True)
class BodyCase:
    id: str
    body: bytes
    parts: Parts
    boundary: bytes | str = "b"


BODIES = [
    BodyCase(
        "one part",
        b"--b\r\nContent-Type: application/dicom\r\n\r\nDICM\r\n--b--\r\n",
        [(DICOM, b"DICM")],
    ),
    BodyCase(
        "two parts",
        b"--b\r\nContent-Type: application/dicom\r\n\r\none\r\n--b\r\n"
        b"Content-Type: application/dicom\r\n\r\ntwo\r\n--b--",
        [(DICOM, b"one"), (DICOM, b"two")],
    ),
    BodyCase(
        "preamble and epilogue ignored",
        b"This is a preamble.\r\n--b\r\nA: 1\r\n\r\ndata\r\n--b--\r\nepilogue --b\r\n\r\nx",
        [({"a": "1"}, b"data")],
    ),
    BodyCase(
        "boundary preceded by CRLF at body start",
        b"\r\n--b\r\nA: 1\r\n\r\ndata\r\n--b--",
        [({"a": "1"}, b"data")],
    ),
    BodyCase(
        "boundary at body start without CRLF",
        b"--b\r\n\r\ndata\r\n--b--",
        [({}, b"data")],
    ),
    BodyCase(
        "quoted boundary with space and ';'",
        b"--a b;c\r\nContent-Type: application/dicom\r\n\r\nx\r\n--a b;c--\r\n",
        [(DICOM, b"x")],
        parse_content_type('multipart/related; type="application/dicom"; boundary="a b;c"').params[
            "boundary"
        ],
    ),
    BodyCase(
        "bytes boundary",
        b"--\x27()+_,-./:=?\r\n\r\nx\r\n--\x27()+_,-./:=?--",
        [({}, b"x")],
        b"'()+_,-./:=?",
    ),
    BodyCase(
        "transport padding after boundaries",
        b"--b \t \r\nA: 1\r\n\r\none\r\n--b\t\r\n\r\ntwo\r\n--b--  \r\n",
        [({"a": "1"}, b"one"), ({}, b"two")],
    ),
    BodyCase(
        "LF-only line endings in headers and boundary lines",
        b"preamble\n--b\nContent-Type: application/dicom\nX: 1\n\none\r\n--b \n\ntwo\r\n--b--\n",
        [({**DICOM, "x": "1"}, b"one"), ({}, b"two")],
    ),
    BodyCase(
        "boundary string in data without CRLF-- does not split",
        b"--b\r\n\r\nxx--b yy b--b--\r\n--bb\r\n--b--",
        [({}, b"xx--b yy b--b--\r\n--bb")],
    ),
    BodyCase(
        "CRLF-- followed by something that is not the boundary",
        b"--b\r\n\r\na\r\n--c\r\n\r\n--\r\n-b\r\n--b--",
        [({}, b"a\r\n--c\r\n\r\n--\r\n-b")],
    ),
    BodyCase(
        "CRLF--boundary followed by other text is data",
        b"--b\r\n\r\nx\r\n--bx\r\n--b-x\r\n--b\rx\r\n--b--",
        [({}, b"x\r\n--bx\r\n--b-x\r\n--b\rx")],
    ),
    BodyCase(
        "bare LF before --boundary in data is data",
        b"--b\r\n\r\nx\n--b\r\ny\r\n--b--",
        [({}, b"x\n--b\r\ny")],
    ),
    BodyCase(
        "data ending in CRLF keeps it",
        b"--b\r\n\r\nline\r\n\r\n--b--",
        [({}, b"line\r\n")],
    ),
    BodyCase(
        "binary data with NUL, CR and LF",
        b"--b\r\n\r\n\x00\r\r\n\n\xff\r\n-\r\n--b--",
        [({}, b"\x00\r\r\n\n\xff\r\n-")],
    ),
    BodyCase(
        "empty part body",
        b"--b\r\nA: 1\r\n\r\n\r\n--b\r\n\r\nx\r\n--b--",
        [({"a": "1"}, b""), ({}, b"x")],
    ),
    BodyCase("zero parts", b"--b--", []),
    BodyCase("zero parts with preamble and epilogue", b"hi\r\n--b--\r\nbye", []),
    BodyCase(
        "header names lower-cased, values trimmed",
        b"--b\r\nCONTENT-TYPE:   application/dicom  \r\nContent-Location:x\r\n\r\n\r\n--b--",
        [({**DICOM, "content-location": "x"}, b"")],
    ),
    BodyCase(
        "repeated headers joined with comma",
        b"--b\r\nX-A: 1\r\nx-a: 2\r\n\r\n\r\n--b--",
        [({"x-a": "1, 2"}, b"")],
    ),
    BodyCase(
        "folded header line unfolded",
        b"--b\r\nContent-Type: multipart/related;\r\n type=application/dicom\r\n\r\n\r\n--b--",
        [({"content-type": "multipart/related; type=application/dicom"}, b"")],
    ),
]


def collect(events: Iterable[Event]) -> Parts:
    """Fold an event stream into parts, checking the events come in a valid order."""
    parts: list[tuple[dict[str, str], bytearray]] = []
    open_index: int | None = None
    for event in events:
        if isinstance(event, PartStart):
            assert open_index is None and event.index == len(parts)
            parts.append((dict(event.headers), bytearray()))
            open_index = event.index
        elif isinstance(event, PartData):
            assert event.index == open_index and event.data
            parts[-1][1].extend(event.data)
        else:
            assert event.index == open_index
            open_index = None
    assert open_index is None
    return [(headers, bytes(data)) for headers, data in parts]


def parse_in_chunks(body: bytes, boundary: bytes | str, sizes: Iterable[int]) -> Parts:
    parser = MultipartParser(boundary)
    events: list[Event] = []
    pos = 0
    for size in sizes:
        events += parser.feed(body[pos : pos + size])
        pos += size
    assert pos >= len(body)
    events += parser.close()
    return collect(events)


def random_splits(length: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    sizes: list[int] = []
    while sum(sizes) < length:
        sizes.append(rng.choice([0, 1, 2, 3, 5, 8, 13, 40]))
    return sizes


@pytest.mark.parametrize("case", BODIES, ids=[case.id for case in BODIES])
def test_parse_whole_body(case: BodyCase) -> None:
    assert iter_parts(case.body, case.boundary) == case.parts


@pytest.mark.parametrize("case", BODIES, ids=[case.id for case in BODIES])
def test_any_chunking_gives_the_same_parts(case: BodyCase) -> None:
    whole = parse_in_chunks(case.body, case.boundary, [len(case.body)])
    assert whole == case.parts
    for size in range(1, 18):
        sizes = [size] * (len(case.body) // size + 1)
        assert parse_in_chunks(case.body, case.boundary, sizes) == whole, f"chunk size {size}"
    for seed in range(5):
        sizes = random_splits(len(case.body), seed)
        assert parse_in_chunks(case.body, case.boundary, sizes) == whole, f"seed {seed}"


# --- errors ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorCase:
    id: str
    body: bytes
    message: str
    max_header_bytes: int = 16 * 1024
    max_parts: int = 10_000


ERRORS = [
    ErrorCase("empty body", b"", "no opening boundary '--b' found"),
    ErrorCase("garbage without boundary", b"hello world\r\n--c\r\n", "no opening boundary"),
    ErrorCase("boundary not at line start", b"x--b\r\n\r\ndata\r\n--c--", "no opening boundary"),
    ErrorCase(
        "missing closing boundary",
        b"--b\r\n\r\none\r\n--b\r\n\r\ntwo is cut sh",
        "body ended inside part 1 before the closing delimiter '--b--'",
    ),
    ErrorCase(
        "body ends right after a delimiter",
        b"--b\r\n\r\none\r\n--b",
        "body ended inside part 0",
    ),
    ErrorCase(
        "body ends inside headers",
        b"--b\r\n\r\none\r\n--b\r\nContent-Type: applic",
        "body ended in the headers of part 1",
    ),
    ErrorCase(
        "header too large",
        b"--b\r\nX: " + b"a" * 200 + b"\r\n\r\ndata\r\n--b--",
        "headers of part 0 are larger than 100 bytes",
        max_header_bytes=100,
    ),
    ErrorCase(
        "header too large without end",
        b"--b\r\nX: " + b"a" * 200,
        "headers of part 0 are larger than 100 bytes",
        max_header_bytes=100,
    ),
    ErrorCase(
        "header line without colon",
        b"--b\r\n\r\nx\r\n--b\r\nContent-Type application/dicom\r\n\r\nx\r\n--b--",
        "part 1: malformed header line b'Content-Type application/dicom'",
    ),
    ErrorCase(
        "header name with space",
        b"--b\r\nContent Type: x\r\n\r\nx\r\n--b--",
        "part 0: malformed header line",
    ),
    ErrorCase(
        "folded line first", b"--b\r\n X: 1\r\n\r\nx\r\n--b--", "part 0: header section starts"
    ),
    ErrorCase(
        "too many parts",
        b"--b\r\n\r\n1\r\n--b\r\n\r\n2\r\n--b\r\n\r\n3\r\n--b--",
        "more than 2 parts",
        max_parts=2,
    ),
    ErrorCase(
        "endless transport padding",
        b"--b" + b" " * 2000 + b"\r\n\r\nx\r\n--b--",
        "transport padding",
    ),
]


@pytest.mark.parametrize("case", ERRORS, ids=[case.id for case in ERRORS])
@pytest.mark.parametrize("chunk_size", [1, 7, 1 << 20], ids=["1B", "7B", "whole"])
def test_malformed_body_raises(case: ErrorCase, chunk_size: int) -> None:
    parser = MultipartParser("b", max_header_bytes=case.max_header_bytes, max_parts=case.max_parts)
    with pytest.raises(MultipartError) as raised:
        for pos in range(0, len(case.body), chunk_size):
            parser.feed(case.body[pos : pos + chunk_size])
        parser.close()
    assert case.message in str(raised.value)


BAD_BOUNDARIES: list[tuple[str, bytes | str]] = [
    ("empty", ""),
    ("empty bytes", b""),
    ("71 characters", "x" * 71),
    ("non-ASCII", "bö"),
    ("CRLF inside", "a\r\nb"),
]


@pytest.mark.parametrize(
    "boundary", [b for _, b in BAD_BOUNDARIES], ids=[i for i, _ in BAD_BOUNDARIES]
)
def test_bad_boundary_rejected_at_construction(boundary: bytes | str) -> None:
    with pytest.raises(MultipartError, match="boundary"):
        MultipartParser(boundary)


def test_seventy_character_boundary_accepted() -> None:
    boundary = "x" * 70
    body = f"--{boundary}\r\n\r\nok\r\n--{boundary}--".encode()
    assert iter_parts(body, boundary) == [({}, b"ok")]


def test_feed_after_close_is_a_programming_error() -> None:
    parser = MultipartParser("b")
    parser.feed(b"--b--")
    assert parser.close() == []
    with pytest.raises(RuntimeError):
        parser.feed(b"")


# --- streaming -------------------------------------------------------------------------------


def test_large_part_streams_with_bounded_buffer() -> None:
    """20 MiB in 64 KiB chunks: data flows out as it comes; only a delimiter prefix waits."""
    boundary = b"0123456789abcdef0123456789abcdef"
    delimiter = b"\r\n--" + boundary
    block = bytearray(random.Random(0).randbytes(64 * 1024))
    block[-len(delimiter) :] = delimiter[:-1] + b"!"  # a near-delimiter at every block end
    payload = bytes(block) * 320
    body = b"--" + boundary + b"\r\nContent-Type: application/dicom\r\n\r\n"
    body += payload + delimiter + b"--\r\n"
    chunk = 64 * 1024
    parser = MultipartParser(boundary)
    received = 0
    for pos in range(0, len(body), chunk):
        for event in parser.feed(body[pos : pos + chunk]):
            if isinstance(event, PartData):
                received += len(event.data)
        assert parser.pending_bytes < len(delimiter) + 4
        assert received >= min(pos + chunk, len(payload)) - 100 - len(delimiter)
    assert parser.close() == []
    assert received == len(payload)


def test_large_part_data_is_exact() -> None:
    payload = random.Random(1).randbytes(3 * 1024 * 1024)
    body = b"--b\r\n\r\n" + payload + b"\r\n--b--"
    parser = MultipartParser("b")
    events = []
    for pos in range(0, len(body), 65_536):
        events += parser.feed(body[pos : pos + 65_536])
    events += parser.close()
    assert collect(events) == [({}, payload)]
    assert events[-1] == PartEnd(0)
