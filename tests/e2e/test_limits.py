"""Request limits and graceful shutdown, against the whole system on loopback.

Each limit crossed gets the documented 4xx with a reason and leaves nothing under
``objects/incoming``; a part over its own limit (or a deflate bomb) is a per-instance failure.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.filewriter import write_dataset, write_file_meta_info
from tests.support.http import multipart_body, sequence_items, stow
from tests.support.system import RunningTessera, start_tessera

from bench.synthetic import ct_series
from tessera_common.errors import FailureReason

pytestmark = pytest.mark.slow

MAX_REQUEST = 4 * 1024**2
MAX_PART = 2 * 1024**2
MAX_PARTS = 3
MAX_PART_HEADER = 1024
IDLE_TIMEOUT = 2.0
LIMITS_ENV = {
    "TESSERA_MAX_REQUEST_BYTES": str(MAX_REQUEST),
    "TESSERA_MAX_PART_BYTES": str(MAX_PART),
    "TESSERA_MAX_PARTS": str(MAX_PARTS),
    "TESSERA_MAX_PART_HEADER_BYTES": str(MAX_PART_HEADER),
    "TESSERA_REQUEST_IDLE_TIMEOUT": str(IDLE_TIMEOUT),
    "TESSERA_MAX_REQUEST_HEADER_BYTES": "8192",
    # One gateway: the graceful-shutdown test signals it and reads its /metrics.
    "TESSERA_GATEWAY_WORKERS": "1",
}
STOW_TYPE = 'multipart/related; type="application/dicom"; boundary=b0undary'


@pytest.fixture(scope="module")
def tessera(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTessera]:
    running = start_tessera(tmp_path_factory.mktemp("limits") / "data", env=LIMITS_ENV)
    yield running
    assert running.stop() == 0, running.log_tail()


def _leftovers(tessera: RunningTessera) -> list[Path]:
    incoming = tessera.data_dir / "objects" / "incoming"
    return [p for p in incoming.rglob("*") if p.is_file()] if incoming.exists() else []


def _raw_exchange(tessera: RunningTessera, head: bytes, body: bytes = b"") -> bytes:
    """Send ``head`` (and ``body``) on a fresh connection; the response's first bytes."""
    with socket.create_connection(("127.0.0.1", tessera.port), timeout=30) as conn:
        conn.sendall(head + body)
        return conn.recv(65536)


def _status(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


def _part(data: bytes) -> bytes:
    return b"--b0undary\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n"


def _chunked(pieces: Iterator[bytes]) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p) + b"0\r\n\r\n"


def _stow_head(length: int | None) -> bytes:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (
        f"POST /dicom-web/studies HTTP/1.1\r\nHost: x\r\nContent-Type: {STOW_TYPE}\r\n"
        f"{framing}\r\nConnection: close\r\n\r\n"
    ).encode()


def test_declared_length_over_limit_is_refused_before_reading(tessera: RunningTessera) -> None:
    raw = _raw_exchange(tessera, _stow_head(10**12))  # not one body byte is sent
    assert _status(raw) == 413, raw
    assert b"TESSERA_MAX_REQUEST_BYTES" in raw


def test_chunked_body_over_limit_is_refused_and_discarded(tessera: RunningTessera) -> None:
    piece = b"\0" * (256 * 1024)
    pieces = iter([_part(piece * 6), _part(piece * 6), _part(piece * 6), b"--b0undary--\r\n"])
    raw = _raw_exchange(tessera, _stow_head(None), _chunked(pieces))
    assert _status(raw) == 413, raw
    assert _leftovers(tessera) == []


STOW_REFUSALS = {
    "too-many-parts": ([b"x"] * (MAX_PARTS + 1), None, 413, "TESSERA_MAX_PARTS"),
    "part-header-too-large": ([b"x"], "X-Padding: " + "p" * 2 * MAX_PART_HEADER, 400, "headers"),
}


@pytest.mark.parametrize("case", sorted(STOW_REFUSALS), ids=sorted(STOW_REFUSALS))
def test_multipart_limits(tessera: RunningTessera, case: str) -> None:
    parts, extra_header, status, mentioned = STOW_REFUSALS[case]
    body, content_type = multipart_body(parts)
    if extra_header is not None:
        body = body.replace(b"Content-Type: application/dicom\r\n", f"{extra_header}\r\n".encode())
    response = requests.post(
        f"{tessera.root}/studies", data=body, headers={"Content-Type": content_type}, timeout=30
    )
    assert response.status_code == status, response.text
    assert mentioned in response.json()["reason"]
    assert _leftovers(tessera) == []


HTTP_HEAD_REFUSALS = {
    "giant-header": b"GET /dicom-web/studies HTTP/1.1\r\nHost: x\r\nX-Big: "
    + b"a" * 100_000
    + b"\r\n\r\n",
    "giant-request-line": b"GET /dicom-web/studies?PatientID="
    + b"a" * 100_000
    + b" HTTP/1.1\r\nHost: x\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(HTTP_HEAD_REFUSALS), ids=sorted(HTTP_HEAD_REFUSALS))
def test_oversized_http_head_is_a_client_error(tessera: RunningTessera, case: str) -> None:
    raw = _raw_exchange(tessera, HTTP_HEAD_REFUSALS[case])
    assert 400 <= _status(raw) < 500, raw[:200]
    assert requests.get(f"{tessera.health_root}/healthz", timeout=10).status_code == 200


def test_stalled_client_is_aborted_and_uploads_discarded(tessera: RunningTessera) -> None:
    (instance,) = ct_series(1, seed=7, rows=32, columns=32)
    started = _part(instance.data)[:-100]
    with socket.create_connection(("127.0.0.1", tessera.port), timeout=30) as conn:
        conn.sendall(_stow_head(None) + b"%x\r\n%s\r\n" % (len(started), started))
        begun = time.monotonic()
        raw = conn.recv(65536)  # the client goes silent; the gateway gives up
    assert _status(raw) == 408, raw
    assert time.monotonic() - begun < IDLE_TIMEOUT + 10
    assert _leftovers(tessera) == []


def test_oversized_part_is_a_per_instance_failure(tessera: RunningTessera) -> None:
    (good,) = ct_series(1, seed=8, rows=32, columns=32)
    response = stow(tessera.root, [good.data, b"\0" * (MAX_PART + 1)])
    assert response.status_code == 202, response.text
    assert len(sequence_items(response.json(), "00081199")) == 1
    assert "byte limit" in response.headers["Warning"]


def _deflate_bomb(inflated_bytes: int) -> bytes:
    """A PS3.10 file in Deflated Explicit VR Little Endian whose dataset inflates hugely."""
    (source,) = ct_series(1, seed=9, rows=8, columns=8)
    ds = pydicom.dcmread(io.BytesIO(source.data))
    del ds.PixelData
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    meta = pydicom.filebase.DicomBytesIO()
    meta.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(meta, ds.file_meta, enforce_standard=True)
    dataset = pydicom.filebase.DicomBytesIO()
    dataset.is_little_endian, dataset.is_implicit_VR = True, False
    write_dataset(dataset, ds)
    # A private OB element (7FDF,1000) of zeros: megabytes on the wire once deflated.
    big_header = b"\xdf\x7f\x00\x10OB\0\0" + inflated_bytes.to_bytes(4, "little")
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = [meta.getvalue(), deflater.compress(dataset.getvalue() + big_header)]
    zeros = b"\0" * (16 * 1024**2)
    for _ in range(inflated_bytes // len(zeros)):
        out.append(deflater.compress(zeros))
    out.append(deflater.flush())
    return b"".join(out)


def test_deflate_bomb_is_a_per_instance_failure(tessera: RunningTessera) -> None:
    bomb = _deflate_bomb(640 * 1024**2)
    assert len(bomb) < MAX_PART
    (good,) = ct_series(1, seed=10, rows=32, columns=32)
    response = stow(tessera.root, [good.data, bomb])
    assert response.status_code == 202, response.text
    failed = sequence_items(response.json(), "00081198")
    assert [item["00081197"]["Value"][0] for item in failed] == [  # type: ignore[index]
        FailureReason.CANNOT_UNDERSTAND
    ]
    assert "inflates beyond" in response.headers["Warning"]
    assert requests.get(f"{tessera.health_root}/healthz", timeout=10).status_code == 200


def _http_in_flight(tessera: RunningTessera) -> float:
    """The gateway's ``tessera_http_requests_in_flight`` (this /metrics request included)."""
    text = requests.get(f"{tessera.health_root}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("tessera_http_requests_in_flight"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("the gateway exports no tessera_http_requests_in_flight")


def test_graceful_shutdown_finishes_in_flight_and_refuses_new(tessera: RunningTessera) -> None:
    (instance,) = ct_series(1, seed=11, rows=32, columns=32)
    body, content_type = multipart_body([instance.data])
    sent_first = threading.Event()

    def slowly() -> Iterator[bytes]:
        step = len(body) // 4 + 1
        for offset in range(0, len(body), step):
            yield body[offset : offset + step]
            sent_first.set()
            time.sleep(0.5)

    result: dict[str, requests.Response] = {}

    def post() -> None:
        result["stow"] = requests.post(
            f"{tessera.root}/studies",
            data=slowly(),
            headers={"Content-Type": content_type},
            timeout=60,
        )

    idle = _http_in_flight(tessera)
    poster = threading.Thread(target=post)
    poster.start()
    assert sent_first.wait(10)
    # The STOW must be in the gateway's hands (not only sent) before SIGTERM, else there is
    # nothing in flight to drain and the gateway stops at once.
    deadline = time.monotonic() + 10
    while _http_in_flight(tessera) <= idle and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(tessera.child_pids()["gateway"], signal.SIGTERM)
    time.sleep(0.2)
    refused = requests.get(f"{tessera.root}/studies", timeout=10)
    poster.join(60)
    assert refused.status_code == 503, refused.text
    assert refused.headers["Retry-After"].isdigit()
    assert "shutting down" in refused.json()["reason"]
    assert result["stow"].status_code == 200, result["stow"].text
    tessera.wait_ready()
