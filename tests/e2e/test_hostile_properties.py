"""Hostile input, property based (ARCHITECTURE invariant 9): whatever arrives, never a 5xx.

One running system (``tessera serve``, every service its own process) receives hypothesis-
generated hostile requests, sent byte for byte over a raw socket so that nothing on the client
side normalises them: mutated multipart bodies and headers, mutated DICOM files (bit flips,
truncations, huge length fields, wrong VRs, a deflate bomb), path traversal and injection
strings in UIDs, QIDO-RS and WADO-URI parameters, frame lists, bulkdata paths and Accept
headers. Every response must be below 500, ``/healthz`` must answer 200 after every example,
no service may have crashed (been restarted by the supervisor), and at the end a known good
instance is still found and retrieved byte-exact. Examples are derandomized (the same inputs
on every run) and bounded; the count of inputs tried and of 5xx seen is printed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import socket
import struct
import time
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any
from urllib.parse import quote

import pydicom
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian
from tests.support.http import multipart_body, retrieve_parts, stow
from tests.support.system import RunningTessera, start_tessera

from bench.synthetic import SyntheticInstance, ct_series

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

EXAMPLES = 100
"""Examples per property: about 900 hostile requests in all, about a minute."""
HOSTILE = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
STOW_TYPE = b'multipart/related; type="application/dicom"; boundary='
MAX_RESPONSE = 4 * 1024 * 1024


# --- the system, the raw client and the tally ---------------------------------------------------


@dataclass
class Tally:
    tried: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)

    def total(self) -> int:
        return sum(self.tried.values())


TALLY = Tally()


@dataclass(frozen=True)
class Known:
    """The known good instance, stored before any hostile input and checked after."""

    instance: SyntheticInstance

    @property
    def study(self) -> str:
        return self.instance.study_uid

    @property
    def series(self) -> str:
        return self.instance.series_uid

    @property
    def sop(self) -> str:
        return self.instance.sop_uid

    @property
    def path(self) -> str:
        return f"/dicom-web/studies/{self.study}/series/{self.series}/instances/{self.sop}"


@pytest.fixture(scope="module")
def tessera(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTessera]:
    running = start_tessera(tmp_path_factory.mktemp("hostile-properties") / "data")
    yield running
    assert running.stop() == 0, running.log_tail()


@pytest.fixture(scope="module")
def known(tessera: RunningTessera) -> Known:
    (instance,) = ct_series(1, seed=4242, rows=16, columns=16)
    response = stow(tessera.root, [instance.data])
    assert response.status_code == 200, response.text
    return Known(instance)


@pytest.fixture(autouse=True)
def _no_crash(tessera: RunningTessera) -> Iterator[None]:
    """No service died (and was restarted by the supervisor) during the property."""
    before = tessera.child_pids()
    yield
    after = tessera.child_pids()
    assert after == before, f"services restarted: {before} -> {after}\n{tessera.log_tail()}"


def exchange(
    port: int,
    method: bytes,
    target: bytes,
    headers: Sequence[tuple[bytes, bytes]] = (),
    body: bytes = b"",
) -> int | None:
    """Send one request exactly as given; the response's status (``None``: no response)."""
    head = [method + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    head += [name + b": " + value for name, value in headers]
    if body or method in (b"POST", b"PUT"):
        head.append(b"Content-Length: %d" % len(body))
    request = b"\r\n".join(head) + b"\r\n\r\n" + body
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        with contextlib.suppress(OSError):  # refused early (413, 400): the answer may follow
            sock.sendall(request)
        try:
            while len(received) < MAX_RESPONSE:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        except OSError:
            pass
    if not received.startswith(b"HTTP/1."):
        return None
    return int(received.split(b" ", 2)[1])


def send(
    tessera: RunningTessera,
    kind: str,
    method: bytes,
    target: bytes,
    headers: Sequence[tuple[bytes, bytes]] = (),
    body: bytes = b"",
) -> int | None:
    """One hostile request: counted, and checked (no 5xx, the server still healthy)."""
    TALLY.tried[kind] += 1
    status = exchange(tessera.port, method, target, headers, body)
    TALLY.statuses[-1 if status is None else status] += 1
    if status is not None and status >= 500:
        reproduction = (
            f"{status} {kind}: {method.decode()} {target[:300]!r} headers={headers!r}"[:1000]
            + f" body[:200]={body[:200]!r}"
        )
        TALLY.server_errors.append(reproduction)
        pytest.fail(reproduction)
    healthz = requests.get(f"{tessera.health_root}/healthz", timeout=30)
    assert healthz.status_code == 200, f"unhealthy after {kind}: {target[:300]!r}"
    return status


# --- hostile values -----------------------------------------------------------------------------

NASTY = [
    "..",
    "../..",
    "%2e%2e",
    "%2E%2E%2F%2E%2E",
    "..%2f..%2fetc%2fpasswd",
    "..\\..\\windows",
    "%252e%252e",
    "%00",
    "1.2.3%00.4",
    "1.2.3\x00",
    "%",
    "%zz",
    "'",
    "' OR 1=1--",
    "1' OR '1'='1",
    '" OR ""="',
    "1; DROP TABLE instances;--",
    '{"$ne":null}',
    '{"$gt":""}',
    "[$ne]=1",
    "$where",
    "this.constructor",
    "*",
    "?",
    "_",
    "\\",
    "\u202e1.2.3",
    "１.２.３",  # noqa: RUF001 - full-width digits
    "1.2.٣",
    "é",
    "日本",
    "\U0001f4a9",
    "1." * 40 + "1",
    "9" * 65,
    "9" * 5000,
    "1..2",
    ".1",
    "1.",
    "01.2",
    "-1",
    "1e5",
    "NaN",
    "null",
    "[]",
    "<script>alert(1)</script>",
    "${jndi:ldap://127.0.0.1/x}",
    "{{7*7}}",
    "\r\nX-Injected: 1",
    " ",
    "",
]
DATES = [
    "20200101",
    "20200101-",
    "-20201231",
    "20200101-20201231",
    "-",
    "2020-01-01",
    "99999999",
    "20201301",
    "20200101-19990101",
    "1",
    "2020010112",
    "20200101120000.000000+0100",
]
NUMBERS = [
    "0",
    "-1",
    "1",
    "2147483648",
    "9223372036854775808",
    "1" * 400,
    "1e309",
    "0x10",
    "1.5",
    " 1",
    "+1",
    "NaN",
    "inf",
]
hostile_text = st.one_of(
    st.sampled_from(NASTY),
    st.sampled_from(DATES),
    st.sampled_from(NUMBERS),
    st.text(max_size=80),
    st.text(alphabet="0123456789.", max_size=70),
)


def encode(value: str, mode: str) -> bytes:
    """A path or query fragment as it goes on the wire: ``raw`` keeps ``..``, ``%``, quotes and
    UTF-8 bytes as they are (only what would break the request line is escaped); ``quoted``
    percent-encodes everything reserved; ``double`` encodes twice."""
    if mode == "quoted":
        return quote(value, safe="").encode()
    if mode == "double":
        return quote(quote(value, safe=""), safe="").encode()
    raw = value.encode("utf-8", "surrogatepass")
    return b"".join(b"%%%02X" % b if b <= 0x20 or b in b"\x7f#" else bytes([b]) for b in raw)


encodings = st.sampled_from(["raw", "quoted", "double"])


# --- UIDs in paths ------------------------------------------------------------------------------

PATHS = [
    ("GET", "/studies/{u}"),
    ("GET", "/studies/{u}/metadata"),
    ("GET", "/studies/{u}/series/{u}"),
    ("GET", "/studies/{u}/series/{u}/instances/{u}"),
    ("GET", "/studies/{u}/series/{u}/instances/{u}/metadata"),
    ("GET", "/studies/{u}/series/{u}/instances/{u}/frames/1"),
    ("GET", "/studies/{u}/series/{u}/instances/{u}/bulkdata/7FE00010"),
    ("GET", "/studies/{u}/pixeldata"),
    ("GET", "/studies/{u}/series"),
    ("GET", "/studies/{u}/instances"),
    ("GET", "/studies/{K}/series/{u}/instances/{u}"),
    ("GET", "/studies/{K}/series/{S}/instances/{u}"),
    ("GET", "/studies/{K}/series/{S}/instances/{u}/frames/1"),
    ("DELETE", "/studies/{u}"),
    ("DELETE", "/studies/{u}/series/{u}/instances/{u}"),
    ("POST", "/studies/{u}"),
]


@HOSTILE
@given(route=st.sampled_from(PATHS), uid=hostile_text, mode=encodings)
def test_uids_in_paths(
    tessera: RunningTessera, known: Known, route: tuple[str, str], uid: str, mode: str
) -> None:
    method, template = route
    path = template.replace("{K}", known.study).replace("{S}", known.series)
    target = b"/dicom-web" + path.encode().replace(b"{u}", encode(uid, mode))
    body, headers = b"", list[tuple[bytes, bytes]]()
    if method == "POST":
        body, content_type = multipart_body([base_instances()[0].data])
        headers = [(b"Content-Type", content_type.encode())]
    send(tessera, "uid-in-path", method.encode(), target, headers, body)


# --- QIDO-RS and WADO-URI parameters -----------------------------------------------------------

QIDO_KEYS = [
    *[
        "PatientName",
        "PatientID",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "ModalitiesInStudy",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "ReferringPhysicianName",
        "00100010",
        "0020000D",
        "00080020",
        "7FE00010",
        "00081030",
        "includefield",
        "limit",
        "offset",
        "fuzzymatching",
        "orderby",
        "NotAKeyword",
        "0010xxxx",
        "PatientName.FamilyName",
        "00400275.00400009",
        "'",
        "$where",
    ],
    "",
    "a" * 300,
]
QIDO_PATHS = [
    "/studies",
    "/series",
    "/instances",
    "/studies/{K}/series",
    "/studies/{K}/instances",
    "/studies/{K}/series/{S}/instances",
]
query_pairs = st.lists(
    st.tuples(st.one_of(st.sampled_from(QIDO_KEYS), st.text(max_size=20)), hostile_text),
    min_size=1,
    max_size=6,
)


def query_string(pairs: list[tuple[str, str]], mode: str) -> bytes:
    return b"&".join(encode(k, mode) + b"=" + encode(v, mode) for k, v in pairs)


@HOSTILE
@given(path=st.sampled_from(QIDO_PATHS), pairs=query_pairs, mode=encodings)
def test_qido_parameters(
    tessera: RunningTessera, known: Known, path: str, pairs: list[tuple[str, str]], mode: str
) -> None:
    path = path.replace("{K}", known.study).replace("{S}", known.series)
    target = b"/dicom-web" + path.encode() + b"?" + query_string(pairs, mode)
    send(tessera, "qido-parameters", b"GET", target, [(b"Accept", b"application/dicom+json")])


WADO_URI_KEYS = [
    "requestType",
    "studyUID",
    "seriesUID",
    "objectUID",
    "contentType",
    "transferSyntax",
    "frameNumber",
    "rows",
    "columns",
    "region",
    "windowCenter",
    "windowWidth",
    "imageQuality",
    "annotation",
    "anonymize",
    "charset",
    "presentationUID",
    "presentationSeriesUID",
    "bogus",
]


@HOSTILE
@given(
    overrides=st.lists(
        st.tuples(st.sampled_from(WADO_URI_KEYS), hostile_text), min_size=1, max_size=5
    ),
    content_type=st.sampled_from(
        ["application/dicom", "image/jpeg", "*/*", "application/dicom;transfer-syntax=*", ""]
    ),
    mode=encodings,
)
def test_wado_uri_parameters(
    tessera: RunningTessera,
    known: Known,
    overrides: list[tuple[str, str]],
    content_type: str,
    mode: str,
) -> None:
    pairs = [
        ("requestType", "WADO"),
        ("studyUID", known.study),
        ("seriesUID", known.series),
        ("objectUID", known.sop),
        ("contentType", content_type),
    ]
    names = {name for name, _ in overrides}
    pairs = [(k, v) for k, v in pairs if k not in names] + overrides
    target = b"/dicom-web/wado?" + query_string(pairs, mode)
    send(tessera, "wado-uri-parameters", b"GET", target)


OVERSIZED = {
    "request-line": (b"/dicom-web/studies?PatientID=" + b"9" * 20_000, []),
    "path": (b"/dicom-web/studies/" + b"1." * 10_000 + b"1", []),
    "header": (b"/dicom-web/studies", [(b"Accept", b"application/dicom+json, " * 4000)]),
    "many-headers": (b"/dicom-web/studies", [(b"X-%d" % n, b"v") for n in range(500)]),
}


@pytest.mark.parametrize("case", sorted(OVERSIZED))
def test_oversized_requests(tessera: RunningTessera, case: str) -> None:
    target, headers = OVERSIZED[case]
    status = send(tessera, "oversized", b"GET", target, headers)
    assert status is None or 400 <= status < 500, status


def test_malformed_request_line_is_not_quoted_in_the_log(tessera: RunningTessera) -> None:
    """aiohttp refuses a request line with a control byte (400) and used to log it whole at
    ERROR: a QIDO query's patient name went into the text log (invariant 10)."""
    marker = "Hostile^Marker"
    target = f"/dicom-web/studies?PatientName={marker}\x7f".encode()
    assert send(tessera, "malformed-request-line", b"GET", target) == 400
    time.sleep(1.0)  # the supervisor copies its children's output into serve.log
    assert marker not in tessera.log_path.read_text(errors="replace")


# --- frames, bulkdata paths and Accept headers on a real instance ------------------------------

frame_lists = st.one_of(
    st.lists(st.integers(-3, 2**70), min_size=1, max_size=30).map(
        lambda ns: ",".join(map(str, ns))
    ),
    st.sampled_from(
        [
            "",
            ",",
            "1,,2",
            "1, 2",
            "1;2",
            "1-3",
            "0",
            "a",
            "1.0",
            "%31",
            "1%2C2",
            ",".join(["1"] * 5000),
        ]
    ),
    hostile_text,
)
bulkdata_paths = st.lists(
    st.one_of(
        st.sampled_from(
            [
                "7FE00010",
                "00281050",
                "00540016",
                "0",
                "1",
                "-1",
                "99999999999",
                "7fe00010",
                "FFFEE000",
                "xxxxxxxx",
                "..",
            ]
        ),
        hostile_text,
    ),
    min_size=1,
    max_size=6,
).map("/".join)
MEDIA = [
    'multipart/related; type="application/dicom"; transfer-syntax=*',
    'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50',
    'multipart/related; type="application/dicom"; transfer-syntax=1.2.3.4.5',
    'multipart/related; type="application/octet-stream"; transfer-syntax=*',
    'multipart/related; type="image/jpeg"',
    'multipart/related; type="image/jls"',
    "multipart/related",
    'multipart/related; type="application/dicom+xml"',
    "application/dicom",
    "application/dicom+json",
    "application/dicom+xml",
    "application/octet-stream",
    "application/zip",
    "image/jpeg",
    "image/png",
    "image/gif",
    "video/mp4",
    "text/html",
    "*/*",
    "*",
    "*/json",
    "garbage",
    "application/dicom; q=abc",
    "application/dicom; q=2",
    "application/dicom; q=-1",
    ";;;",
    'multipart/related; type="',
    "multipart/related; boundary=x",
    "application/dicom;" + "p=v;" * 2000,
]
accepts = st.one_of(
    st.sampled_from(MEDIA),
    st.lists(st.sampled_from(MEDIA), min_size=2, max_size=8).map(", ".join),
    st.text(max_size=100),
)
RESOURCES = [
    "",
    *["/metadata", "/frames/1", "/bulkdata/7FE00010", "/pixeldata", "/rendered", "/thumbnail"],
]
LEVELS = ["study", "series", "instance"]


def header_value(text: str) -> bytes:
    """A header value as sent: UTF-8, without the line breaks that would end it."""
    return text.encode("utf-8", "surrogatepass").replace(b"\r", b"").replace(b"\n", b"")


@HOSTILE
@given(frames=frame_lists, mode=encodings)
def test_frame_lists(tessera: RunningTessera, known: Known, frames: str, mode: str) -> None:
    target = (known.path + "/frames/").encode() + encode(frames, mode)
    send(tessera, "frame-list", b"GET", target)


@HOSTILE
@given(path=bulkdata_paths, mode=encodings)
def test_bulkdata_paths(tessera: RunningTessera, known: Known, path: str, mode: str) -> None:
    encoded = b"/".join(encode(segment, mode) for segment in path.split("/"))
    send(tessera, "bulkdata-path", b"GET", (known.path + "/bulkdata/").encode() + encoded)


@HOSTILE
@given(accept=accepts, level=st.sampled_from(LEVELS), resource=st.sampled_from(RESOURCES))
def test_accept_headers(
    tessera: RunningTessera, known: Known, accept: str, level: str, resource: str
) -> None:
    base = {
        "study": f"/dicom-web/studies/{known.study}",
        "series": f"/dicom-web/studies/{known.study}/series/{known.series}",
        "instance": known.path,
    }[level]
    if resource in ("/frames/1", "/bulkdata/7FE00010"):
        base = known.path
    target = (base + resource).encode()
    send(tessera, "accept-header", b"GET", target, [(b"Accept", header_value(accept))])


# --- multipart mutations ------------------------------------------------------------------------


@cache
def base_instances() -> tuple[SyntheticInstance, ...]:
    """The instances hostile STOWs are made of (never the known good one)."""
    return tuple(ct_series(2, seed=777, rows=16, columns=16))


def _truncate(body: bytes, at: int) -> bytes:
    return body[: at % (len(body) + 1)]


def _insert(body: bytes, at: int, garbage: bytes) -> bytes:
    at %= len(body) + 1
    return body[:at] + garbage + body[at:]


def _flip(body: bytes, at: int, bit: int) -> bytes:
    if not body:
        return body
    at %= len(body)
    return body[:at] + bytes([body[at] ^ (1 << bit)]) + body[at + 1 :]


def _delete(body: bytes, at: int, length: int) -> bytes:
    at %= len(body) + 1
    return body[:at] + body[at + length :]


def _duplicate(body: bytes, at: int, length: int) -> bytes:
    at %= len(body) + 1
    return body[:at] + body[at : at + length] * 2 + body[at + length :]


positions = st.integers(0, 2**16)
body_mutations = st.lists(
    st.one_of(
        st.tuples(st.just("truncate"), positions),
        st.tuples(st.just("insert"), positions, st.binary(min_size=1, max_size=64)),
        st.tuples(st.just("insert"), positions, st.sampled_from([b"\r\n", b"--", b"\r\n\r\n"])),
        st.tuples(st.just("flip"), positions, st.integers(0, 7)),
        st.tuples(st.just("delete"), positions, st.integers(1, 200)),
        st.tuples(st.just("duplicate"), positions, st.integers(1, 200)),
    ),
    min_size=1,
    max_size=5,
)


MUTATORS: dict[str, Any] = {
    "truncate": _truncate,
    "insert": _insert,
    "flip": _flip,
    "delete": _delete,
    "duplicate": _duplicate,
}


def mutate(body: bytes, mutations: list[tuple[Any, ...]]) -> bytes:
    for name, *args in mutations:
        body = MUTATORS[name](body, *args)
    return body


def envelope(parts: list[bytes], boundary: bytes, part_headers: list[bytes]) -> bytes:
    chunks = []
    for data in parts:
        chunks.append(b"--" + boundary + b"\r\n")
        chunks += [h + b"\r\n" for h in part_headers]
        chunks.append(b"\r\n" + data + b"\r\n")
    chunks.append(b"--" + boundary + b"--\r\n")
    return b"".join(chunks)


PART_HEADERS = [
    b"Content-Type: application/dicom",
    b"Content-Type: application/dicom; transfer-syntax=garbage",
    b"Content-Type: application/octet-stream",
    b"Content-Type: text/plain",
    b"Content-Type: application/dicom+json",
    b"Content-Length: -1",
    b"Content-Length: 99999999999999999999",
    b"Content-Length: 1",
    b"Content-Transfer-Encoding: base64",
    b"Content-Location: ../../etc/passwd",
    b"Content-ID: <%00>",
    b"X-" + b"a" * 20000 + b": 1",
    b"Content-Type",
    b": no name",
    b"\xff\xfe: \xff",
    b"Content-Type: multipart/related; boundary=in",
]
INVALID_BOUNDARIES = [b"x" * 71, b"\xff"]
"""Boundaries RFC 2046 §5.1.1 forbids (longer than 70 characters, non-ASCII). Found by this
suite: the gateway built its ``MultipartParser`` before the ``try`` that turns a
``MultipartError`` into a 400, so the parser's boundary check escaped as a 500."""
CONTENT_TYPES = [
    STOW_TYPE + b"{b}",
    STOW_TYPE + b'"{b}"',
    STOW_TYPE + b"x" * 200,
    b"multipart/related; boundary={b}",
    b'multipart/related; type="application/dicom"',
    b'multipart/related; type="application/dicom"; boundary=',
    b'multipart/related; type="application/dicom"; boundary={b}; boundary=other',
    b"multipart/mixed; boundary={b}",
    b"multipart/related; type=application/dicom; boundary={b}; charset=ebcdic",
    b'multipart/related; type="application/dicom"; boundary="{b}',
    b'MULTIPART/RELATED; TYPE="APPLICATION/DICOM"; BOUNDARY={b}',
]


@HOSTILE
@given(
    mutations=body_mutations,
    content_type=st.sampled_from(CONTENT_TYPES),
    part_headers=st.lists(st.sampled_from(PART_HEADERS), max_size=3),
    boundary=st.sampled_from(
        [b"b", b"tessera-boundary", b"x" * 70, b"a b", b"--", b"'()+_,-./:=?", *INVALID_BOUNDARIES]
    ),
)
def test_multipart_mutations(
    tessera: RunningTessera,
    known: Known,
    mutations: list[tuple[Any, ...]],
    content_type: bytes,
    part_headers: list[bytes],
    boundary: bytes,
) -> None:
    body = envelope([i.data for i in base_instances()], boundary, part_headers)
    headers = [(b"Content-Type", content_type.replace(b"{b}", boundary))]
    send(tessera, "multipart", b"POST", b"/dicom-web/studies", headers, mutate(body, mutations))


@HOSTILE
@given(
    shape=st.sampled_from(
        [
            "tiny-parts",
            "nested",
            "huge-part-header",
            "no-closing",
            "lf-only",
            "preamble-epilogue",
            "empty-parts",
        ]
    ),
    count=st.integers(1, 3000),
)
def test_multipart_shapes(tessera: RunningTessera, shape: str, count: int) -> None:
    data = base_instances()[1].data
    boundary = b"outer"
    if shape == "tiny-parts":
        body = envelope([bytes([n % 256]) for n in range(count)], boundary, [])
    elif shape == "nested":
        inner = envelope([data], b"inner", [b"Content-Type: application/dicom"])
        body = envelope(
            [inner] * (count % 5 + 1),
            boundary,
            [b'Content-Type: multipart/related; type="application/dicom"; boundary=inner'],
        )
    elif shape == "huge-part-header":
        body = envelope([data], boundary, [b"X-Long: " + b"h" * (count * 40)])
    elif shape == "no-closing":
        body = envelope([data], boundary, [])[: -len(b"--outer--\r\n")]
    elif shape == "lf-only":
        body = envelope([data], boundary, [b"Content-Type: application/dicom"])
        body = body.replace(b"\r\n", b"\n")
    elif shape == "preamble-epilogue":
        body = b"x" * count + b"\r\n" + envelope([data], boundary, []) + b"y" * count
    else:
        body = envelope([b""] * (count % 50 + 1), boundary, [])
    headers = [(b"Content-Type", STOW_TYPE + boundary)]
    send(tessera, "multipart-shape", b"POST", b"/dicom-web/studies", headers, body)


@pytest.mark.parametrize("boundary", INVALID_BOUNDARIES, ids=["71-chars", "non-ascii"])
def test_invalid_boundary_is_a_client_error(tessera: RunningTessera, boundary: bytes) -> None:
    headers = [(b"Content-Type", STOW_TYPE + boundary)]
    status = send(tessera, "invalid-boundary", b"POST", b"/dicom-web/studies", headers, b"x")
    assert status == 400, status


# --- DICOM mutations ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Element:
    """Where one top-level data element of the base file sits (Explicit VR Little Endian)."""

    tag_at: int
    vr_at: int
    length_at: int
    length_size: int


@cache
def base_elements() -> tuple[Element, ...]:
    data = base_instances()[0].data
    ds = pydicom.dcmread(io.BytesIO(data))
    elements = []
    for raw in ds._dict.values():
        if not isinstance(raw, pydicom.dataelem.RawDataElement) or raw.value_tell is None:
            continue
        long_form = raw.VR in {
            "OB",
            "OD",
            "OF",
            "OL",
            "OV",
            "OW",
            "SQ",
            "SV",
            "UC",
            "UN",
            "UR",
            "UT",
            "UV",
        }
        length_at = raw.value_tell - (4 if long_form else 2)
        vr_at = length_at - (4 if long_form else 2)
        elements.append(Element(vr_at - 4, vr_at, length_at, 4 if long_form else 2))
    return tuple(elements)


def _set_length(data: bytes, element: Element, value: int) -> bytes:
    packed = struct.pack(
        "<I" if element.length_size == 4 else "<H", value % 2 ** (8 * element.length_size)
    )
    at = element.length_at
    return data[:at] + packed + data[at + element.length_size :]


def _set_vr(data: bytes, element: Element, vr: bytes) -> bytes:
    return data[: element.vr_at] + vr + data[element.vr_at + 2 :]


TRANSFER_SYNTAXES = [
    b"1.2.840.10008.1.2",
    b"1.2.840.10008.1.2.2",
    b"1.2.840.10008.1.2.1.99",
    b"1.2.840.10008.1.2.4.50",
    b"1.2.840.10008.1.2.4.90",
    b"1.2.840.10008.1.2.5",
    b"1.2.3.4",
    b"",
    b"\x00" * 20,
]
dicom_mutations = st.lists(
    st.one_of(
        st.tuples(st.just("flip"), positions, st.integers(0, 7)),
        st.tuples(st.just("truncate"), positions),
        st.tuples(
            st.just("length"),
            st.integers(0, 200),
            st.sampled_from([0xFFFFFFFF, 0xFFFFFFFE, 0x7FFFFFFF, 0xFFFF, 1, 3, 0]),
        ),
        st.tuples(
            st.just("vr"),
            st.integers(0, 200),
            st.one_of(
                st.sampled_from([b"SQ", b"UN", b"OB", b"US", b"AT", b"DS", b"XX", b"\x00\x00"]),
                st.binary(min_size=2, max_size=2),
            ),
        ),
        st.tuples(st.just("transfer-syntax"), st.sampled_from(TRANSFER_SYNTAXES)),
        st.tuples(st.just("magic"), st.sampled_from([b"DICN", b"\x00\x00\x00\x00", b"dicm"])),
    ),
    min_size=1,
    max_size=4,
)


def mutate_dicom(data: bytes, mutations: list[tuple[Any, ...]]) -> bytes:
    elements = base_elements()
    for name, *args in mutations:
        if name == "flip":
            data = _flip(data, *args)
        elif name == "truncate":
            data = _truncate(data, *args)
        elif name == "length":
            element = elements[args[0] % len(elements)]
            if element.length_at + element.length_size <= len(data):
                data = _set_length(data, element, args[1])
        elif name == "vr":
            element = elements[args[0] % len(elements)]
            if element.vr_at + 2 <= len(data):
                data = _set_vr(data, element, args[1])
        elif name == "transfer-syntax":  # the UID changes, the encoding does not
            data = data.replace(b"1.2.840.10008.1.2.1\x00", args[0] + b"\x00", 1)
        elif name == "magic":
            data = data[:128] + args[0] + data[132:]
    return data


@HOSTILE
@given(mutations=dicom_mutations, good_neighbour=st.booleans())
def test_dicom_mutations(
    tessera: RunningTessera, mutations: list[tuple[Any, ...]], good_neighbour: bool
) -> None:
    first, second = base_instances()
    parts = [mutate_dicom(first.data, mutations)] + ([second.data] if good_neighbour else [])
    body, content_type = multipart_body(parts)
    headers = [(b"Content-Type", content_type.encode())]
    send(tessera, "dicom-mutation", b"POST", b"/dicom-web/studies", headers, body)


@cache
def deflate_bomb() -> bytes:
    """A Deflated Explicit VR Little Endian file whose dataset inflates to 600 MiB of zeros in
    one OB element (more than the store's 512 MiB limit) from about 600 kB."""
    source = pydicom.dcmread(io.BytesIO(base_instances()[0].data))
    meta = source.file_meta
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    out = DicomBytesIO()
    out.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(out, meta, enforce_standard=True)
    size = 600 * 1024 * 1024
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    # (0042,0011) Encapsulated Document, OB: before any pixel data
    out.write(compressor.compress(b"\x42\x00\x11\x00OB\x00\x00" + struct.pack("<I", size)))
    zeros = bytes(1024 * 1024)
    for _ in range(size // len(zeros)):
        out.write(compressor.compress(zeros))
    out.write(compressor.flush())
    return out.getvalue()


def test_deflate_bomb(tessera: RunningTessera) -> None:
    body, content_type = multipart_body([deflate_bomb()])
    headers = [(b"Content-Type", content_type.encode())]
    status = send(tessera, "deflate-bomb", b"POST", b"/dicom-web/studies", headers, body)
    assert status in (400, 409), status


# --- afterwards -----------------------------------------------------------------------------------


def test_known_good_instance_survives(
    tessera: RunningTessera, known: Known, capsys: pytest.CaptureFixture[str]
) -> None:
    """Runs last: the archive still serves the instance stored before all of the above."""
    ((_, data),) = retrieve_parts(tessera.root + known.path.removeprefix("/dicom-web"))
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(known.instance.data).hexdigest()
    found = requests.get(
        f"{tessera.root}/instances", params={"SOPInstanceUID": known.sop}, timeout=30
    )
    assert found.status_code == 200 and len(found.json()) == 1
    with capsys.disabled():
        print(f"\n\nhostile inputs tried: {TALLY.total()}, 5xx seen: {len(TALLY.server_errors)}")
        print("by kind: " + ", ".join(f"{k} {v}" for k, v in sorted(TALLY.tried.items())))
        print("statuses: " + ", ".join(f"{k}: {v}" for k, v in sorted(TALLY.statuses.items())))
        for reproduction in TALLY.server_errors[:20]:
            print("  5xx: " + reproduction)
    assert TALLY.total() >= 300
    assert not TALLY.server_errors
