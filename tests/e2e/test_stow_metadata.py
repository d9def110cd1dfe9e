"""STOW-RS metadata + bulk data requests end to end (PS3.18 §10.5.1.2): DICOM JSON and PS3.19
XML with bulk data parts, single-part bodies, XML responses, coercion warnings, hostile input,
chunked bodies and ``Expect: 100-continue``, against the whole system over HTTP."""

from __future__ import annotations

import copy
import http.client
import io
import uuid
from collections.abc import Iterator
from typing import Any

import defusedxml.ElementTree as SafeET  # type: ignore[import-untyped]
import orjson
import pydicom
import pytest
import requests
from pydicom.dataset import Dataset
from tests.support.dicom_files import SHARED_TESTDATA
from tests.support.http import retrieve_parts, sequence_items
from tests.support.system import RunningTessera, start_tessera
from tests.unit.test_stow_assemble import (
    ROUND_TRIPS,
    SplitInstance,
    attributes,
    same_pixels,
    split_instance,
)

from tessera_common.errors import FailureReason, WarningReason
from tessera_gateway.dicom_xml import to_xml

pytestmark = pytest.mark.slow

JSON = "application/dicom+json"
XML = "application/dicom+xml"
Part = tuple[dict[str, str], bytes]


@pytest.fixture(scope="module")
def tessera(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTessera]:
    running = start_tessera(tmp_path_factory.mktemp("stow-metadata") / "data")
    yield running
    assert running.stop() == 0, running.log_tail()


def _load(name: str) -> Dataset:
    return pydicom.dcmread(SHARED_TESTDATA / ROUND_TRIPS[name])


def _renamed(ds: Dataset) -> Dataset:
    """A copy of ``ds`` with new UIDs, so that each test stores instances of its own."""
    ds = copy.deepcopy(ds)
    ds.StudyInstanceUID = pydicom.uid.generate_uid()
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def _bulk(split: SplitInstance) -> list[Part]:
    return [
        ({"Content-Type": media, "Content-Location": location}, data)
        for location, media, data in split.parts
    ]


def _body(parts: list[Part], part_type: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    chunks = []
    for headers, data in parts:
        chunks.append(f"--{boundary}\r\n".encode())
        chunks.extend(f"{name}: {value}\r\n".encode() for name, value in headers.items())
        chunks.append(b"\r\n" + data + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f'multipart/related; type="{part_type}"; boundary={boundary}'


def _post(
    tessera: RunningTessera,
    parts: list[Part],
    part_type: str = JSON,
    study: str | None = None,
    accept: str = JSON,
) -> requests.Response:
    body, content_type = _body(parts, part_type)
    return requests.post(
        f"{tessera.root}/studies" + (f"/{study}" if study else ""),
        data=body,
        headers={"Content-Type": content_type, "Accept": accept},
        timeout=120,
    )


def _json_part(*datasets: dict[str, Any]) -> Part:
    return {"Content-Type": JSON}, orjson.dumps(list(datasets))


def _retrieve(tessera: RunningTessera, ds: Dataset) -> Dataset:
    url = (
        f"{tessera.root}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )
    ((_, data),) = retrieve_parts(url)
    return pydicom.dcmread(io.BytesIO(data))


def _referenced(response: requests.Response) -> list[str]:
    items = sequence_items(response.json(), "00081199")
    return [item["00081155"]["Value"][0] for item in items]  # type: ignore[index]


def _failures(response: requests.Response) -> list[int]:
    items = sequence_items(response.json(), "00081198")
    return [item["00081197"]["Value"][0] for item in items]  # type: ignore[index]


def test_json_round_trip(tessera: RunningTessera) -> None:
    """Every test file in one request: one JSON array, every bulk data part after it."""
    originals = [_renamed(_load(name)) for name in sorted(ROUND_TRIPS)]
    splits = [split_instance(ds) for ds in originals]
    parts = [_json_part(*(s.metadata for s in splits))]
    for split in splits:
        parts.extend(_bulk(split))
    response = _post(tessera, parts)
    assert response.status_code == 200, (response.text, response.headers.get("Warning"))
    assert sorted(_referenced(response)) == sorted(ds.SOPInstanceUID for ds in originals)
    for original in originals:
        stored = _retrieve(tessera, original)
        assert attributes(stored) == attributes(original)
        same_pixels(original, stored)


def test_xml_round_trip_and_xml_response(tessera: RunningTessera) -> None:
    """One PS3.19 document per part; the response in XML as the Accept header asks."""
    originals = [_renamed(_load(name)) for name in ("htj2k-multiframe", "jpeg-ls", "pdf")]
    splits = [split_instance(ds) for ds in originals]
    parts: list[Part] = [({"Content-Type": XML}, to_xml(s.metadata)) for s in splits]
    for split in splits:
        parts.extend(_bulk(split))
    response = _post(tessera, parts, part_type=XML, accept=XML)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith(XML)
    root = SafeET.fromstring(response.content)
    ns = {"d": "http://dicom.nema.org/PS3.19/models/NativeDICOM"}
    sops = root.findall(
        "d:DicomAttribute[@tag='00081199']/d:Item/d:DicomAttribute[@tag='00081155']/d:Value", ns
    )
    assert sorted(v.text for v in sops) == sorted(ds.SOPInstanceUID for ds in originals)
    urls = root.findall(
        "d:DicomAttribute[@tag='00081199']/d:Item/d:DicomAttribute[@tag='00081190']", ns
    )
    assert len(urls) == 3
    for original in originals:
        stored = _retrieve(tessera, original)
        assert attributes(stored) == attributes(original)
        same_pixels(original, stored)


def test_study_uid_from_the_url_is_a_coercion_with_warning(tessera: RunningTessera) -> None:
    original = _renamed(_load("native-implicit-le"))
    split = split_instance(original)
    del split.metadata["0020000D"]
    study = original.StudyInstanceUID
    response = _post(tessera, [_json_part(split.metadata), *_bulk(split)], study=study)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["00081190"]["Value"] == [f"{tessera.root}/studies/{study}"]
    (item,) = sequence_items(body, "00081199")
    assert item["00081196"]["Value"] == [WarningReason.COERCION_OF_DATA_ELEMENTS]  # type: ignore[index]
    assert item["00081190"]["Value"][0].endswith(  # type: ignore[index]
        f"/studies/{study}/series/{original.SeriesInstanceUID}/instances/{original.SOPInstanceUID}"
    )
    modified = item["04000561"]["Value"][0]  # type: ignore[index]
    assert modified["04000565"]["Value"] == ["COERCE"]
    stored = _retrieve(tessera, original)
    assert stored.StudyInstanceUID == study
    assert stored.OriginalAttributesSequence[0].ReasonForTheAttributeModification == "COERCE"


def test_single_part_bodies(tessera: RunningTessera) -> None:
    original = _renamed(_load("jpeg-baseline"))
    buffer = io.BytesIO()
    original.save_as(buffer, enforce_file_format=True)
    response = requests.post(
        f"{tessera.root}/studies",
        data=buffer.getvalue(),
        headers={"Content-Type": "application/dicom"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert _referenced(response) == [original.SOPInstanceUID]
    assert _retrieve(tessera, original).SOPInstanceUID == original.SOPInstanceUID


def test_not_acceptable(tessera: RunningTessera) -> None:
    split = split_instance(_renamed(_load("pdf")))
    response = _post(tessera, [_json_part(split.metadata), *_bulk(split)], accept="text/html")
    assert response.status_code == 406
    assert "application/dicom+xml" in response.json()["reason"]


def _raw_post(
    tessera: RunningTessera, body: bytes, content_type: str, expect: bool
) -> tuple[int, bytes]:
    """POST with ``Transfer-Encoding: chunked`` (and ``Expect: 100-continue``) over a raw
    connection, the body sent in small chunks only after the interim response."""
    connection = http.client.HTTPConnection("127.0.0.1", tessera.port, timeout=60)
    try:
        connection.putrequest("POST", "/dicom-web/studies")
        connection.putheader("Content-Type", content_type)
        connection.putheader("Transfer-Encoding", "chunked")
        connection.putheader("Accept", JSON)
        if expect:
            connection.putheader("Expect", "100-continue")
        connection.endheaders()
        if expect:
            interim = connection.sock.recv(64) if connection.sock else b""
            assert interim.startswith(b"HTTP/1.1 100"), interim
        for start in range(0, len(body), 7919):
            chunk = body[start : start + 7919]
            connection.send(f"{len(chunk):X}\r\n".encode() + chunk + b"\r\n")
        connection.send(b"0\r\n\r\n")
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.parametrize("expect", [False, True], ids=["chunked", "chunked-expect-100"])
def test_chunked_bodies(tessera: RunningTessera, expect: bool) -> None:
    original = _renamed(_load("native-implicit-le"))
    split = split_instance(original)
    body, content_type = _body([_json_part(split.metadata), *_bulk(split)], JSON)
    status, data = _raw_post(tessera, body, content_type, expect)
    assert status == 200, data
    assert _retrieve(tessera, original).SOPInstanceUID == original.SOPInstanceUID


def _outside(split: SplitInstance) -> list[Part]:
    split.metadata["7FE00010"]["BulkDataURI"] = "http://evil.invalid/steal"
    return [_json_part(split.metadata)]


def _not_dicom_json(split: SplitInstance) -> list[Part]:
    return [({"Content-Type": JSON}, b'{"hello": ["world"]}'), *_bulk(split)]


def _larger_than_declared(split: SplitInstance) -> list[Part]:
    parts = [_json_part(split.metadata), *_bulk(split)]
    headers, data = parts[-1]
    parts[-1] = ({**headers, "Content-Length": str(len(data) - 100)}, data)
    return parts


def _external_entity(split: SplitInstance) -> list[Part]:
    document = (
        b'<?xml version="1.0"?><!DOCTYPE NativeDicomModel [<!ENTITY xxe SYSTEM '
        b'"file:///etc/passwd">]><NativeDicomModel xmlns="http://dicom.nema.org/PS3.19/models/'
        b'NativeDICOM"><DicomAttribute tag="00100010" vr="PN"><PersonName number="1">'
        b"<Alphabetic><FamilyName>&xxe;</FamilyName></Alphabetic></PersonName>"
        b"</DicomAttribute></NativeDicomModel>"
    )
    return [({"Content-Type": XML}, document)]


def _unreferenced(split: SplitInstance) -> list[Part]:
    return [({"Content-Type": "application/octet-stream", "Content-Location": "urn:stray"}, b"12")]


def _missing_uid(split: SplitInstance) -> list[Part]:
    del split.metadata["00080018"]
    return [_json_part(split.metadata), *_bulk(split)]


#: case -> (bad parts, Failure Reasons expected, words in the Warning header)
HOSTILE = {
    "bulk-uri-outside-the-request": (_outside, [FailureReason.CANNOT_UNDERSTAND], "never fetched"),
    "json-that-is-not-dicom-json": (
        _not_dicom_json,
        [FailureReason.CANNOT_UNDERSTAND, FailureReason.CANNOT_UNDERSTAND],
        "not DICOM JSON",
    ),
    "bulk-part-larger-than-declared": (
        _larger_than_declared,
        [FailureReason.CANNOT_UNDERSTAND, FailureReason.CANNOT_UNDERSTAND],
        "Content-Length",
    ),
    "xml-external-entity": (_external_entity, [FailureReason.CANNOT_UNDERSTAND], "never resolved"),
    "bulk-part-referenced-by-nothing": (
        _unreferenced,
        [FailureReason.CANNOT_UNDERSTAND],
        "referenced by no BulkDataURI",
    ),
    "missing-sop-instance-uid": (
        _missing_uid,
        [FailureReason.DATASET_DOES_NOT_MATCH_SOP_CLASS],
        "SOP Instance UID (0008,0018) is missing",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE), ids=sorted(HOSTILE))
def test_hostile_parts_between_good_ones(tessera: RunningTessera, case: str) -> None:
    make, failures, words = HOSTILE[case]
    good = [_renamed(_load("native-implicit-le")) for _ in range(2)]
    bad = _renamed(_load("native-implicit-le"))
    good_splits = [split_instance(ds, prefix=f"urn:good{n}:") for n, ds in enumerate(good)]
    bad_parts = make(split_instance(bad, prefix="urn:bad:"))
    parts = [_json_part(good_splits[0].metadata), *_bulk(good_splits[0]), *bad_parts]
    parts += [_json_part(good_splits[1].metadata), *_bulk(good_splits[1])]
    part_type = XML if case.startswith("xml") else JSON
    if part_type == XML:  # every metadata part of an XML request is XML
        parts = [
            (h, to_xml(orjson.loads(d)[0])) if h["Content-Type"] == JSON else (h, d)
            for h, d in parts
        ]
        parts = [
            ({**h, "Content-Type": XML}, d) if h["Content-Type"] == JSON else (h, d)
            for h, d in parts
        ]
    response = _post(tessera, parts, part_type=part_type)
    assert response.status_code == 202, response.text
    assert sorted(_referenced(response)) == sorted(ds.SOPInstanceUID for ds in good)
    assert sorted(_failures(response)) == sorted(int(f) for f in failures), response.text
    assert words in response.headers.get("Warning", ""), response.headers.get("Warning")
    assert b"root:" not in response.content
    found = requests.get(
        f"{tessera.root}/instances", params={"SOPInstanceUID": bad.SOPInstanceUID}, timeout=30
    )
    assert found.status_code == 204 or found.json() == []
    for ds in good:
        assert _retrieve(tessera, ds).SOPInstanceUID == ds.SOPInstanceUID


def test_oversized_metadata_part_is_413(tessera: RunningTessera) -> None:
    huge = b"[" + b" " * (17 * 1024 * 1024) + b"]"
    response = _post(tessera, [({"Content-Type": JSON}, huge)])
    assert response.status_code == 413, response.text
    assert "metadata part" in response.json()["reason"]


@pytest.mark.parametrize("boundary", ["x" * 71, "a\tb"], ids=["71-chars", "control-character"])
def test_invalid_boundary_is_400(tessera: RunningTessera, boundary: str) -> None:
    response = requests.post(
        f"{tessera.root}/studies",
        data=b"x",
        headers={"Content-Type": f'multipart/related; type="{JSON}"; boundary="{boundary}"'},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    assert "boundary" in response.json()["reason"]
