"""The DICOMweb client behind ``tessera upload | search | download``.

Pure parts as tables (multipart framing, STOW answers, retry policy, file discovery,
batches, QIDO display); the HTTP edge and the commands against a small DICOMweb server on
127.0.0.1 (aiohttp, in a thread) that can be told to fail first.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pydicom
import pydicom.data
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from typer.testing import CliRunner

from tessera.cli import app
from tessera.client import AuthenticationError, DicomWebClient, DicomWebError
from tessera.client_multipart import (
    MultipartError,
    MultipartParser,
    PartData,
    PartEnd,
    PartEvent,
    PartStart,
    body_length,
    boundary_of,
    close_delimiter,
    part_head,
    part_separator,
)
from tessera.client_retry import RetryPolicy, is_transient, parse_retry_after
from tessera.client_stow import (
    STORED,
    FileOutcome,
    InstanceReference,
    Outcome,
    StoreResponse,
    attribute,
    describe_reason,
    parse_store_response,
    parse_warning_header,
)
from tessera.discovery import (
    DICOMDIR,
    NOT_DICOM,
    TOO_SHORT,
    Candidate,
    Discovery,
    classify,
    discover,
    read_sop_instance_uid,
)
from tessera.search_cli import display_value, parse_query
from tessera.upload_cli import UploadReport, make_batches, print_summary
from tessera_gateway.multipart import iter_parts

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"
CT = TEST_FILES / "CT_small.dcm"
MR = TEST_FILES / "MR_small.dcm"
TRUNCATED = TEST_FILES / "rtplan_truncated.dcm"
CLIENT_VARIABLES = ("TESSERA_URL", "TESSERA_TOKEN", "TESSERA_API_KEY")


def sop_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


# --- multipart framing --------------------------------------------------------------------------


def build_body(boundary: str, parts: list[bytes]) -> bytes:
    chunks = []
    for index, data in enumerate(parts):
        chunks.append(part_head(boundary) if index == 0 else part_separator(boundary))
        chunks.append(data)
    chunks.append(close_delimiter(boundary))
    return b"".join(chunks)


def collect(events: list[PartEvent]) -> list[tuple[dict[str, str], bytes]]:
    parts: list[tuple[dict[str, str], bytes]] = []
    for event in events:
        if isinstance(event, PartStart):
            parts.append((dict(event.headers), b""))
        elif isinstance(event, PartData):
            headers, data = parts[-1]
            parts[-1] = (headers, data + event.data)
    ends = sum(isinstance(e, PartEnd) for e in events)
    assert ends == len(parts)
    return parts


def parse(body: bytes, boundary: str, chunk: int) -> list[tuple[dict[str, str], bytes]]:
    parser = MultipartParser(boundary)
    events: list[PartEvent] = []
    for start in range(0, len(body), chunk):
        events.extend(parser.feed(body[start : start + chunk]))
    parser.finish()
    return collect(events)


DICOM_PART = {"content-type": "application/dicom"}


@dataclass(frozen=True)
class ParseCase:
    id: str
    body: bytes
    parts: list[tuple[dict[str, str], bytes]]
    boundary: str = "XX"


PARSE_CASES = [
    ParseCase(
        "one part",
        b"--XX\r\nContent-Type: application/dicom\r\n\r\nabc\r\n--XX--\r\n",
        [(DICOM_PART, b"abc")],
    ),
    ParseCase(
        "preamble and epilogue",
        b"junk\r\n--XX\r\nA: 1\r\n\r\nx\r\n--XX--\r\nmore junk",
        [({"a": "1"}, b"x")],
    ),
    ParseCase(
        "transport padding after the delimiter",
        b"--XX  \t\r\nA: 1\r\n\r\nx\r\n--XX--",
        [({"a": "1"}, b"x")],
    ),
    ParseCase("a part without headers", b"--XX\r\n\r\nx\r\n--XX--\r\n", [({}, b"x")]),
    ParseCase("an empty part", b"--XX\r\nA: 1\r\n\r\n\r\n--XX--\r\n", [({"a": "1"}, b"")]),
    ParseCase(
        "two parts",
        b"--XX\r\nA: 1\r\n\r\nx\r\n--XX\r\nA: 2\r\n\r\ny\r\n--XX--\r\n",
        [({"a": "1"}, b"x"), ({"a": "2"}, b"y")],
    ),
    ParseCase(
        "a delimiter without its CRLF is data",
        b"--XX\r\n\r\na--XXb\n--XX\r\n--XX--",
        [({}, b"a--XXb\n--XX")],
    ),
    ParseCase("CRLF inside data", b"--XX\r\n\r\n\r\n\r\n-\r\n--XX--", [({}, b"\r\n\r\n-")]),
    ParseCase(
        "folded header line", b"--XX\r\nA: 1\r\n 2\r\n\r\nx\r\n--XX--", [({"a": "1 2"}, b"x")]
    ),
    ParseCase("no parts at all", b"--XX--\r\n", []),
]


@pytest.mark.parametrize("case", PARSE_CASES, ids=lambda c: c.id)
@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1 << 20])
def test_multipart_parser(case: ParseCase, chunk: int) -> None:
    assert parse(case.body, case.boundary, chunk) == case.parts


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(b"--XX\r\n\r\nabc", "before its close delimiter", id="no close delimiter"),
        pytest.param(b"only a preamble", "before its close delimiter", id="no delimiter"),
        pytest.param(b"--XX\r\nno colon\r\n\r\nx\r\n--XX--", "malformed", id="bad header"),
        pytest.param(
            b"--XXjunk\r\n\r\nx\r\n--XX--",
            "after a multipart delimiter",
            id="bytes after the delimiter",
        ),
    ],
)
def test_multipart_parser_refuses(body: bytes, message: str) -> None:
    parser = MultipartParser("XX")
    with pytest.raises(MultipartError, match=message):
        list(parser.feed(body))
        parser.finish()


@pytest.mark.parametrize(
    ("header", "boundary"),
    [
        pytest.param(
            'multipart/related; type="application/dicom"; boundary=abc', "abc", id="unquoted"
        ),
        pytest.param(
            'multipart/related; boundary="a b:c"; type="application/dicom"',
            "a b:c",
            id="quoted, first",
        ),
        pytest.param("Multipart/Related;Boundary=X-1", "X-1", id="case folded, no spaces"),
    ],
)
def test_boundary_of(header: str, boundary: str) -> None:
    assert boundary_of(header) == boundary


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("application/dicom", id="not multipart"),
        pytest.param('multipart/related; type="application/dicom"', id="no boundary"),
        pytest.param("multipart/related; boundary=" + "x" * 71, id="boundary too long"),
        pytest.param("multipart/related; boundary=", id="empty boundary"),
    ],
)
def test_boundary_of_refuses(header: str) -> None:
    with pytest.raises(MultipartError):
        boundary_of(header)


@pytest.mark.parametrize("sizes", [[0], [1], [5, 0, 7], [1000] * 3])
def test_body_length_is_exact(sizes: list[int]) -> None:
    boundary = "tessera-0123456789abcdef"
    body = build_body(boundary, [b"d" * size for size in sizes])
    assert body_length(boundary, sizes) == len(body)


@settings(max_examples=60, deadline=None)
@given(
    parts=st.lists(st.binary(max_size=300), min_size=1, max_size=5),
    chunk=st.integers(min_value=1, max_value=64),
)
def test_framing_round_trips_and_matches_the_gateway_parser(parts: list[bytes], chunk: int) -> None:
    boundary = "tessera-fedcba9876543210"
    body = build_body(boundary, parts)
    ours = parse(body, boundary, chunk)
    assert [data for _, data in ours] == parts
    assert all(headers == DICOM_PART for headers, _ in ours)
    gateways = iter_parts(body, boundary)
    assert [data for _, data in gateways] == parts


# --- STOW-RS answers ----------------------------------------------------------------------------


def item(
    uid: str | None, reason_tag: str | None = None, reason: object = None
) -> dict[str, object]:
    found: dict[str, object] = {"00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]}}
    if uid is not None:
        found["00081155"] = {"vr": "UI", "Value": [uid]}
    if reason_tag is not None:
        found[reason_tag] = {"vr": "US", "Value": [reason]}
    return found


def store_body(referenced: list[dict[str, object]], failed: list[dict[str, object]]) -> bytes:
    body: dict[str, object] = {"00081190": {"vr": "UR"}}
    if referenced:
        body["00081199"] = {"vr": "SQ", "Value": referenced}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    return json.dumps(body).encode()


@dataclass(frozen=True)
class StowCase:
    id: str
    status: int
    body: bytes
    expected: StoreResponse
    content_type: str | None = "application/dicom+json"
    warnings: tuple[str, ...] = ()


STOW_CASES = [
    StowCase(
        "all stored",
        200,
        store_body([item("1.1"), item("1.2")], []),
        StoreResponse(200, (InstanceReference("1.1", None), InstanceReference("1.2", None))),
    ),
    StowCase(
        "stored with a warning",
        202,
        store_body([item("1.1", "00081196", 0xB000)], []),
        StoreResponse(202, (InstanceReference("1.1", 0xB000),)),
    ),
    StowCase(
        "some failed",
        202,
        store_body([item("1.1")], [item("1.2", "00081197", 0xC000), item(None, "00081197", 272)]),
        StoreResponse(
            202,
            (InstanceReference("1.1", None),),
            (InstanceReference("1.2", 0xC000), InstanceReference(None, 0x0110)),
        ),
        warnings=('299 tessera "part 2 failed: the file is truncated"',),
    ),
    StowCase(
        "reason sent as a decimal string",
        409,
        store_body([], [item("1.2", "00081197", "49152")]),
        StoreResponse(409, (), (InstanceReference("1.2", 0xC000),)),
    ),
    StowCase(
        "a JSON array of one response",
        200,
        b"[" + store_body([item("1.1")], []) + b"]",
        StoreResponse(200, (InstanceReference("1.1", None),)),
    ),
    StowCase("200 without a body", 200, b"", StoreResponse(200), content_type=None),
    StowCase(
        "XML answer is not read",
        200,
        b"<NativeDicomModel/>",
        StoreResponse(200),
        content_type="application/dicom+xml",
    ),
    StowCase("409 without a body", 409, b"", StoreResponse(409, error="HTTP 409")),
    StowCase(
        "400 with a JSON error",
        400,
        b'{"error": "x", "reason": "no boundary"}',
        StoreResponse(400, error="HTTP 400: no boundary"),
        content_type="application/json",
    ),
    StowCase(
        "413 with plain text",
        413,
        b"  too\nbig ",
        StoreResponse(413, error="HTTP 413: too big"),
        content_type="text/plain",
    ),
    StowCase(
        "502 with an HTML page",
        502,
        b"<html>bad gateway</html>",
        StoreResponse(502, error="HTTP 502"),
        content_type="text/html",
    ),
]


@pytest.mark.parametrize("case", STOW_CASES, ids=lambda c: c.id)
def test_parse_store_response(case: StowCase) -> None:
    parsed = parse_store_response(case.status, case.body, case.content_type, case.warnings)
    expected = case.expected
    if case.warnings:
        expected = StoreResponse(
            expected.status,
            expected.referenced,
            expected.failed,
            tuple(parse_warning_header(w) for w in case.warnings),
            expected.error,
        )
    assert parsed == expected


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ('299 tessera "part 1 failed: bad"', "part 1 failed: bad"),
        (r'299 - "say \"hi\""', 'say "hi"'),
        ("199 misc", "199 misc"),
    ],
)
def test_parse_warning_header(value: str, text: str) -> None:
    assert parse_warning_header(value) == text


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (0xC000, "C000H Cannot understand"),
        (0xC0F3, "C0F3H Cannot understand"),
        (0xA701, "A701H Out of resources"),
        (0x0111, "0111H Duplicate SOP Instance"),
        (0xC122, "C122H Transfer Syntax not supported"),
        (0xB000, "B000H Coercion of data elements"),
        (0x1234, "1234H"),
        (None, "no reason given"),
    ],
)
def test_describe_reason(code: int | None, text: str) -> None:
    assert describe_reason(code) == text


@dataclass(frozen=True)
class AttributeCase:
    id: str
    uids: list[str | None]
    response: StoreResponse
    outcomes: list[FileOutcome]


FAILED_C000 = FileOutcome(Outcome.FAILED, 0xC000)

ATTRIBUTE_CASES = [
    AttributeCase(
        "matched by UID, in any order",
        ["1", "2"],
        StoreResponse(202, (InstanceReference("2", 0xB006),), (InstanceReference("1", 0xC000),)),
        [FAILED_C000, FileOutcome(Outcome.WARNING, 0xB006)],
    ),
    AttributeCase(
        "a failure without UID goes to the unreadable file",
        ["1", None, "3"],
        StoreResponse(
            202,
            (InstanceReference("1", None), InstanceReference("3", None)),
            (InstanceReference(None, 0xC000),),
        ),
        [STORED, FAILED_C000, STORED],
    ),
    AttributeCase(
        "part notes from Warning headers",
        [None],
        StoreResponse(
            409,
            (),
            (InstanceReference(None, 0xC000),),
            warnings=("part 1 failed: truncated at byte 9",),
        ),
        [FileOutcome(Outcome.FAILED, 0xC000, "truncated at byte 9")],
    ),
    AttributeCase(
        "one UID sent twice, the second copy failed, as a Warning says",
        ["1", "1"],
        StoreResponse(
            202,
            (InstanceReference("1", None),),
            (InstanceReference("1", 0xC000),),
            warnings=("part 2 failed: truncated",),
        ),
        [STORED, FileOutcome(Outcome.FAILED, 0xC000, "truncated")],
    ),
    AttributeCase(
        "one UID sent twice, the first copy failed, as a Warning says",
        ["1", "1"],
        StoreResponse(
            202,
            (InstanceReference("1", None),),
            (InstanceReference("1", 0xC000),),
            warnings=("part 1 failed: truncated",),
        ),
        [FileOutcome(Outcome.FAILED, 0xC000, "truncated"), STORED],
    ),
    AttributeCase(
        "one UID sent twice, no Warning: each item used once",
        ["1", "1"],
        StoreResponse(202, (InstanceReference("1", None),), (InstanceReference("1", 0xC000),)),
        [STORED, FAILED_C000],
    ),
    AttributeCase(
        "duplicates",
        ["1"],
        StoreResponse(409, (), (InstanceReference("1", 0x0111),)),
        [FileOutcome(Outcome.DUPLICATE, 0x0111)],
    ),
    AttributeCase(
        "a 200 that names nobody stores all", ["1", None], StoreResponse(200), [STORED, STORED]
    ),
    AttributeCase(
        "a 202 that leaves one out",
        ["1", "2"],
        StoreResponse(202, (InstanceReference("1", None),)),
        [STORED, FileOutcome(Outcome.FAILED, None, "not in the response")],
    ),
    AttributeCase(
        "a failed request fails every file",
        ["1", "2"],
        StoreResponse(400, error="HTTP 400: no"),
        [FileOutcome(Outcome.FAILED, None, "HTTP 400: no")] * 2,
    ),
]


@pytest.mark.parametrize("case", ATTRIBUTE_CASES, ids=lambda c: c.id)
def test_attribute(case: AttributeCase) -> None:
    assert attribute(case.uids, case.response) == case.outcomes


# --- retry policy -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "retry_after", "jitter", "delay"),
    [
        pytest.param(1, None, 1.0, 0.5, id="first backoff"),
        pytest.param(3, None, 1.0, 2.0, id="doubles"),
        pytest.param(3, None, 0.0, 1.0, id="jitter keeps the upper half"),
        pytest.param(20, None, 1.0, 30.0, id="capped"),
        pytest.param(1, 7.0, 0.3, 7.0, id="Retry-After wins"),
        pytest.param(1, 9999.0, 1.0, 120.0, id="Retry-After capped"),
        pytest.param(1, 0.0, 1.0, 0.0, id="Retry-After zero"),
    ],
)
def test_retry_delay(attempt: int, retry_after: float | None, jitter: float, delay: float) -> None:
    assert RetryPolicy().delay(attempt, retry_after, jitter) == pytest.approx(delay)


def test_retry_attempts_are_bounded() -> None:
    policy = RetryPolicy(attempts=3)
    assert [policy.should_retry(n) for n in (1, 2, 3)] == [True, True, False]
    with pytest.raises(ValueError, match="at least one"):
        RetryPolicy(attempts=0)


@pytest.mark.parametrize(
    ("status", "transient"),
    [
        (408, True),
        (429, True),
        (500, True),
        (503, True),
        (504, True),
        (400, False),
        (401, False),
        (409, False),
        (413, False),
        (501, False),
    ],
)
def test_transient_statuses(status: int, transient: bool) -> None:
    assert is_transient(status) is transient


NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        pytest.param("5", 5.0, id="delay-seconds"),
        pytest.param(" 0 ", 0.0, id="zero, padded"),
        pytest.param("Thu, 01 Jan 2026 12:00:30 GMT", 30.0, id="HTTP-date"),
        pytest.param("Thu, 01 Jan 2026 11:00:00 GMT", 0.0, id="HTTP-date in the past"),
        pytest.param("soon", None, id="unreadable"),
        pytest.param("-3", None, id="negative"),
        pytest.param(None, None, id="absent"),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, NOW) == seconds


# --- discovery and batches ----------------------------------------------------------------------

HEAD = bytes(128) + b"DICM"


@pytest.mark.parametrize(
    ("name", "head", "reason"),
    [
        pytest.param("a.dcm", HEAD, None, id="PS3.10 file"),
        pytest.param("noext", HEAD, None, id="any name"),
        pytest.param("x.txt", b"hello" * 40, NOT_DICOM, id="text"),
        pytest.param(
            "bare.dcm",
            b"\x08\x00\x05\x00CS" + bytes(200),
            NOT_DICOM,
            id="bare data set, no preamble",
        ),
        pytest.param("DICM.dcm", b"DICM" + bytes(200), NOT_DICOM, id="DICM at offset 0"),
        pytest.param("cut.dcm", HEAD[:131], TOO_SHORT, id="cut inside the preamble"),
        pytest.param("empty", b"", TOO_SHORT, id="empty"),
        pytest.param("DICOMDIR", HEAD, DICOMDIR, id="DICOMDIR"),
    ],
)
def test_classify(name: str, head: bytes, reason: str | None) -> None:
    assert classify(name, head) == reason


@pytest.fixture
def upload_tree(tmp_path: Path) -> Path:
    """ct.dcm, nested/mr.dcm, nested/deeper/truncated.dcm (header intact), notes.txt,
    cut.dcm (cut inside the preamble), empty, DICOMDIR."""
    root = tmp_path / "tree"
    (root / "nested" / "deeper").mkdir(parents=True)
    shutil.copy(CT, root / "ct.dcm")
    shutil.copy(MR, root / "nested" / "mr.dcm")
    shutil.copy(TRUNCATED, root / "nested" / "deeper" / "truncated.dcm")
    (root / "notes.txt").write_text("not DICOM at all, but longer than a preamble. " * 10)
    (root / "cut.dcm").write_bytes(CT.read_bytes()[:100])
    (root / "empty").write_bytes(b"")
    (root / "DICOMDIR").write_bytes(HEAD + bytes(10))
    return root


def test_discover(upload_tree: Path) -> None:
    found = discover([upload_tree, upload_tree / "ct.dcm"])
    relative = {c.path.relative_to(upload_tree).as_posix(): c.size for c in found.candidates}
    assert relative == {
        "ct.dcm": CT.stat().st_size,
        "nested/mr.dcm": MR.stat().st_size,
        "nested/deeper/truncated.dcm": TRUNCATED.stat().st_size,
    }
    skipped = {s.path.name: s.reason for s in found.skipped}
    assert skipped == {
        "notes.txt": NOT_DICOM,
        "cut.dcm": TOO_SHORT,
        "empty": TOO_SHORT,
        "DICOMDIR": DICOMDIR,
    }
    assert found.total_bytes == sum(relative.values())


def test_read_sop_instance_uid(upload_tree: Path) -> None:
    assert read_sop_instance_uid(upload_tree / "ct.dcm") == sop_uid(CT)
    assert read_sop_instance_uid(upload_tree / "notes.txt") is None
    assert read_sop_instance_uid(upload_tree / "empty") is None


def sized(*sizes: int) -> list[Candidate]:
    return [Candidate(Path(f"f{i}"), size) for i, size in enumerate(sizes)]


@pytest.mark.parametrize(
    ("sizes", "max_files", "max_bytes", "shape"),
    [
        pytest.param([1] * 5, 2, 100, [2, 2, 1], id="by count"),
        pytest.param([1] * 4, 2, 100, [2, 2], id="even"),
        pytest.param([60, 60, 10, 10], 10, 100, [2, 2], id="by bytes"),
        pytest.param([500, 1, 1], 10, 100, [1, 2], id="a large file alone"),
        pytest.param([], 10, 100, [], id="nothing"),
    ],
)
def test_make_batches(sizes: list[int], max_files: int, max_bytes: int, shape: list[int]) -> None:
    candidates = sized(*sizes)
    batches = make_batches(candidates, max_files, max_bytes)
    assert [len(b) for b in batches] == shape
    assert [c for b in batches for c in b] == candidates


# --- QIDO display -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pairs", "params"),
    [
        (["PatientID=P1"], [("PatientID", "P1")]),
        (
            ["StudyDate=20200101-", "includefield=all"],
            [("StudyDate", "20200101-"), ("includefield", "all")],
        ),
        (["00100010=DOE^*=x"], [("00100010", "DOE^*=x")]),
        (["PatientName="], [("PatientName", "")]),
    ],
)
def test_parse_query(pairs: list[str], params: list[tuple[str, str]]) -> None:
    assert parse_query(pairs) == params


@pytest.mark.parametrize("pair", ["PatientID", "=x"])
def test_parse_query_refuses(pair: str) -> None:
    with pytest.raises(Exception, match="KEY=VALUE"):
        parse_query([pair])


@pytest.mark.parametrize(
    ("attribute_", "text"),
    [
        ({"vr": "UI", "Value": ["1.2"]}, "1.2"),
        ({"vr": "CS", "Value": ["CT", "SEG"]}, "CT\\SEG"),
        ({"vr": "PN", "Value": [{"Alphabetic": "Doe^John"}]}, "Doe^John"),
        ({"vr": "IS", "Value": [3]}, "3"),
        ({"vr": "SQ", "Value": [{}, {}]}, "2 items"),
        ({"vr": "LO"}, ""),
        (None, ""),
    ],
)
def test_display_value(attribute_: object, text: str) -> None:
    assert display_value(attribute_) == text


# --- a small DICOMweb server --------------------------------------------------------------------


@dataclass
class FakeArchive:
    """Stores PS3.10 parts in memory; parts pydicom cannot read fail with C000H."""

    url: str = ""
    fail_first: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    stored: dict[str, bytes] = field(default_factory=dict)
    studies: dict[str, str] = field(default_factory=dict)
    """SOP Instance UID -> Study Instance UID."""
    bodies: list[bytes] = field(default_factory=list)

    async def stow(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, dict(request.headers)))
        body = await request.read()
        self.bodies.append(body)
        if self.fail_first:
            status, headers = self.fail_first.pop(0)
            return web.Response(status=status, headers=headers, text="not now")
        boundary = boundary_of(request.headers["Content-Type"])
        referenced, failed, warnings = [], [], []
        for index, (_, data) in enumerate(iter_parts(body, boundary)):
            try:
                ds = pydicom.dcmread(io.BytesIO(data))
                ds.PixelData  # noqa: B018 - reads to the end
                uid = str(ds.SOPInstanceUID)
                if len(ds) < 10:
                    raise ValueError("truncated")
            except Exception:
                failed.append(item(None, "00081197", 0xC000))
                warnings.append(f'299 fake "part {index + 1} failed: cannot read it"')
                continue
            self.stored[uid] = data
            self.studies[uid] = str(ds.StudyInstanceUID)
            referenced.append(item(uid))
        status = 200 if not failed else 202 if referenced else 409
        response = web.Response(
            status=status,
            body=store_body(referenced, failed),
            content_type="application/dicom+json",
        )
        for warning in warnings:
            response.headers.add("Warning", warning)
        return response

    async def qido(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, dict(request.headers)))
        if "Bogus" in request.query:
            return web.json_response({"error": "x", "reason": "unknown key [Bogus]"}, status=400)
        if not self.studies:
            return web.Response(status=204)
        matches = [
            {
                "0020000D": {"vr": "UI", "Value": [study]},
                "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Fake^Patient"}]},
            }
            for study in sorted(set(self.studies.values()))
        ]
        return web.json_response(matches, content_type="application/dicom+json")

    async def wado(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, dict(request.headers)))
        study = request.match_info["study"]
        parts = [data for uid, data in sorted(self.stored.items()) if self.studies[uid] == study]
        boundary = "fake-boundary"
        body = build_body(boundary, parts)
        return web.Response(
            body=body,
            headers={
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'
            },
        )


@pytest.fixture
def archive() -> Iterator[FakeArchive]:
    fake = FakeArchive()
    application = web.Application(client_max_size=1 << 30)
    application.router.add_post("/dicom-web/studies", fake.stow)
    application.router.add_get("/dicom-web/studies", fake.qido)
    application.router.add_get("/dicom-web/studies/{study}", fake.wado)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(application)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    fake.url = f"http://127.0.0.1:{port}/dicom-web"
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield fake
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    loop.run_until_complete(runner.cleanup())
    loop.close()


FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02)


async def test_store_retries_503_then_succeeds(archive: FakeArchive) -> None:
    archive.fail_first = [(503, {"Retry-After": "0"})]
    files = [Candidate(CT, CT.stat().st_size), Candidate(MR, MR.stat().st_size)]
    sent: list[int] = []
    retried: list[str] = []
    async with DicomWebClient(
        archive.url, retry=FAST, on_retry=lambda why, _: retried.append(why)
    ) as client:
        response = await client.store(files, sent.append)
    assert response.status == 200 and response.plain_success
    assert {r.sop_instance_uid for r in response.referenced} == {sop_uid(CT), sop_uid(MR)}
    assert len(archive.bodies) == 2 and client.retries == 1
    assert retried == ["HTTP 503: not now"]
    assert sum(sent) == CT.stat().st_size + MR.stat().st_size  # the failed attempt taken back
    boundary = boundary_of(archive.requests[1][1]["Content-Type"])
    assert [d for _, d in iter_parts(archive.bodies[1], boundary)] == [
        CT.read_bytes(),
        MR.read_bytes(),
    ]
    assert archive.requests[1][1]["Content-Length"] == str(len(archive.bodies[1]))


async def test_store_gives_up_after_bounded_attempts(archive: FakeArchive) -> None:
    archive.fail_first = [(429, {}), (502, {}), (504, {}), (503, {})]
    async with DicomWebClient(archive.url, retry=FAST) as client:
        with pytest.raises(DicomWebError, match="gave up after 3 attempts"):
            await client.store([Candidate(CT, CT.stat().st_size)])
    assert len(archive.bodies) == 3


async def test_store_does_not_retry_refused_credentials(archive: FakeArchive) -> None:
    archive.fail_first = [(401, {"WWW-Authenticate": "Bearer"})]
    async with DicomWebClient(archive.url, token="tok", retry=FAST) as client:
        with pytest.raises(AuthenticationError):
            await client.store([Candidate(CT, CT.stat().st_size)])
    assert len(archive.bodies) == 1
    assert archive.requests[0][1]["Authorization"] == "Bearer tok"


async def test_connection_errors_are_retried_then_reported() -> None:
    with socket_closed_port() as port:
        async with DicomWebClient(f"http://127.0.0.1:{port}/dicom-web", retry=FAST) as client:
            with pytest.raises(DicomWebError, match="gave up after 3 attempts"):
                await client.store([Candidate(CT, CT.stat().st_size)])
            assert client.retries == 2


class socket_closed_port:  # noqa: N801 - a context manager used like a function
    """A loopback port nothing listens on."""

    def __enter__(self) -> int:
        import socket

        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        port: int = self._socket.getsockname()[1]
        return port

    def __exit__(self, *exc: object) -> None:
        self._socket.close()


async def test_store_notices_a_file_that_changed(archive: FakeArchive, tmp_path: Path) -> None:
    copy = tmp_path / "ct.dcm"
    shutil.copy(CT, copy)
    candidate = Candidate(copy, copy.stat().st_size + 10)
    async with DicomWebClient(archive.url, retry=RetryPolicy(attempts=1)) as client:
        with pytest.raises(Exception, match="changed while being uploaded"):
            await client.store([candidate])


# --- the commands -------------------------------------------------------------------------------


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env=dict.fromkeys(CLIENT_VARIABLES))


def test_upload_command(archive: FakeArchive, upload_tree: Path, runner: CliRunner) -> None:
    archive.fail_first = [(503, {"Retry-After": "0"})]
    result = runner.invoke(
        app,
        ["upload", str(upload_tree), "--url", archive.url, "--batch", "2", "--concurrency", "2"],
        env={"TESSERA_API_KEY": "tsk_1_secret"},
    )
    assert result.exit_code == 1, result.output
    rows = summary(result.stdout)
    assert rows["stored"] == 2
    assert rows["failed"] == 1
    assert rows["C000H Cannot understand"] == 1
    assert rows["skipped"] == 4
    assert rows[NOT_DICOM] == 1 and rows[TOO_SHORT] == 2 and rows[DICOMDIR] == 1
    assert "truncated.dcm: C000H Cannot understand — cannot read it" in result.stdout
    assert "1 retry" in result.stdout
    assert set(archive.stored) == {sop_uid(CT), sop_uid(MR)}
    assert {headers.get("Authorization") for _, headers in archive.requests} == {
        "Bearer tsk_1_secret"
    }


def test_upload_command_success_exits_zero(
    archive: FakeArchive, upload_tree: Path, runner: CliRunner
) -> None:
    result = runner.invoke(app, ["upload", str(upload_tree / "ct.dcm"), "--url", archive.url])
    assert result.exit_code == 0, result.output
    assert summary(result.stdout)["stored"] == 1


def test_upload_command_refuses_two_credentials(upload_tree: Path, runner: CliRunner) -> None:
    result = runner.invoke(app, ["upload", str(upload_tree), "--token", "a", "--api-key", "b"])
    assert result.exit_code == 2
    assert "not both" in result.output


def test_search_and_download_commands(
    archive: FakeArchive, upload_tree: Path, runner: CliRunner, tmp_path: Path
) -> None:
    empty = runner.invoke(app, ["search", "--url", archive.url, "--format", "json"])
    assert empty.exit_code == 0, empty.output
    assert json.loads(empty.stdout) == []
    for name in ("ct.dcm", "nested/mr.dcm"):
        uploaded = runner.invoke(app, ["upload", str(upload_tree / name), "--url", archive.url])
        assert uploaded.exit_code == 0, uploaded.output
    found = runner.invoke(app, ["search", "--url", archive.url, "-q", "PatientID=*"])
    assert found.exit_code == 0, found.output
    study = str(pydicom.dcmread(CT).StudyInstanceUID)
    assert study in found.stdout and "Fake^Patient" in found.stdout
    out = tmp_path / "out"
    fetched = runner.invoke(app, ["download", study, "--url", archive.url, "--out", str(out)])
    assert fetched.exit_code == 0, fetched.output
    written = out / f"{sop_uid(CT)}.dcm"
    assert hashlib.sha256(written.read_bytes()).digest() == hashlib.sha256(CT.read_bytes()).digest()
    assert not list(out.glob(".*"))  # no temporary file left


@pytest.mark.parametrize(
    "arguments",
    [
        pytest.param(["download", "1.2.abc", "--out", "x"], id="bad study UID"),
        pytest.param(["download", "1.2", "../..", "--out", "x"], id="path in a series UID"),
        pytest.param(["search", "series", "--series", "1.2"], id="series without study"),
        pytest.param(["search", "-q", "PatientID"], id="query without ="),
    ],
)
def test_commands_refuse_bad_arguments(arguments: list[str], runner: CliRunner) -> None:
    result = runner.invoke(app, arguments)
    assert result.exit_code == 2, result.output


def summary(stdout: str) -> dict[str, int]:
    """The rows of the summary table: label -> count."""
    rows: dict[str, int] = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("│┃").split("│")]
        if len(cells) == 2 and cells[1].isdigit():
            rows[cells[0]] = int(cells[1])
    return rows


def test_search_command_reports_a_refused_query(archive: FakeArchive, runner: CliRunner) -> None:
    result = runner.invoke(app, ["search", "--url", archive.url, "-q", "Bogus=1"])
    assert result.exit_code == 1
    assert "HTTP 400: unknown key [Bogus]" in result.stderr


def test_summary_prints_server_text_as_is() -> None:
    found = Discovery(candidates=[Candidate(Path("[b]x.dcm"), 1)], skipped=[])
    report = UploadReport(
        outcomes=[(found.candidates[0], FileOutcome(Outcome.FAILED, None, "HTTP 400: [/x] no"))]
    )
    output = io.StringIO()
    print_summary(Console(file=output, width=200), found, report, verbose=True)
    text = output.getvalue()
    assert "failed: [b]x.dcm: HTTP 400: [/x] no" in text
    assert summary(text)["HTTP 400: [/x] no"] == 1


def test_upload_command_stops_when_credentials_are_refused(
    archive: FakeArchive, upload_tree: Path, runner: CliRunner
) -> None:
    archive.fail_first = [(403, {})]
    result = runner.invoke(
        app,
        ["upload", str(upload_tree), "--url", archive.url, "--batch", "1", "--concurrency", "1"],
        env={"TESSERA_TOKEN": "expired"},
    )
    assert result.exit_code == 1, result.output
    assert "stopped: HTTP 403" in result.stderr
    assert summary(result.stdout)["not sent"] == 3
    assert len(archive.bodies) == 1
