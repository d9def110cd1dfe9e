"""End to end: WADO-RS and WADO-URI against the whole system as separate processes.

Every shared test file (and a few of pydicom's edge cases) is stored, then: retrieved
byte-exact (multipart and ZIP), every frame compared with the frame pydicom extracts from the
original, transcodes decoded and compared with pydicom's pixels, metadata compared with
pydicom's ``to_json_dict``, every BulkDataURI resolved, Range, caching and the error cases;
dicomweb-client retrieves series metadata and frames.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import time
import zipfile
from collections.abc import Iterator
from functools import cache
from typing import Any

import numpy as np
import orjson
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.data import get_testdata_file
from pydicom.encaps import generate_frames
from pydicom.uid import generate_uid
from tests.support.dicom_files import DicomFile, shared_files, split_by_sop
from tests.support.http import stow
from tests.support.system import RunningTessera, start_tessera

from tessera_codec import plugins
from tessera_common.layout import (
    RELATIVE_ROOT,
    metadata_document_digest,
    metadata_document_key,
)
from tessera_common.messages import contents_digest
from tessera_gateway.mediatype import parse_content_type
from tessera_gateway.multipart import iter_parts
from tessera_query.documents import MIN_INSTANCES

pytestmark = pytest.mark.slow
plugins.register()

EXPLICIT = "1.2.840.10008.1.2.1"
DEFLATED = "1.2.840.10008.1.2.1.99"
VIDEO = {"1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.102"}
LOSSY = {
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.55",
    "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.203",
}
EDGE_CASES = ["examples_overlay.dcm", "waveform_ecg.dcm", "OBXXXX1A_expb.dcm", "JPEG-lossy.dcm"]
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
OCTET_ANY = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


def _edge_files() -> list[DicomFile]:
    from tests.support.dicom_files import pydicom_files

    return [f for f in pydicom_files() if f.path.name in EDGE_CASES]


FILES, _ = split_by_sop((*shared_files(), *_edge_files()))


@pytest.fixture(scope="module")
def tessera(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTessera]:
    running = start_tessera(tmp_path_factory.mktemp("wado") / "data")
    yield running
    assert running.stop() == 0, running.log_tail()


@pytest.fixture(scope="module")
def stored(tessera: RunningTessera) -> list[DicomFile]:
    for start in range(0, len(FILES), 20):
        batch = FILES[start : start + 20]
        response = stow(tessera.root, [f.path.read_bytes() for f in batch])
        assert response.status_code == 200, response.text
    return FILES


def url(tessera: RunningTessera, f: DicomFile) -> str:
    return f"{tessera.root}/studies/{f.study_uid}/series/{f.series_uid}/instances/{f.sop_uid}"


def parts(response: requests.Response) -> list[tuple[dict[str, str], bytes]]:
    assert response.status_code in (200, 206), (response.status_code, response.text[:300])
    media = parse_content_type(response.headers["Content-Type"])
    assert media.essence == "multipart/related"
    return iter_parts(response.content, media.params["boundary"])


@cache
def original(path: str) -> pydicom.Dataset:
    return pydicom.dcmread(path)


def reference_pixels(f: DicomFile) -> np.ndarray | None:
    """pydicom's pixels of the original; None where pydicom has no decoder (retired JPEG
    Progressive, video)."""
    try:
        return original(str(f.path)).pixel_array
    except (NotImplementedError, RuntimeError):
        return None


def has_pixels(f: DicomFile) -> bool:
    return "PixelData" in original(str(f.path)) or "FloatPixelData" in original(str(f.path))


def reference_frames(f: DicomFile) -> list[bytes]:
    """The frames pydicom extracts from the original (PS3.5 §8.1.1, §A.4)."""
    ds = original(str(f.path))
    count = int(ds.get("NumberOfFrames") or 1)
    element = ds["PixelData"] if "PixelData" in ds else ds["FloatPixelData"]
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:
        return list(generate_frames(element.value, number_of_frames=count))
    size = len(element.value) // count
    if ds.BitsAllocated == 1:
        return []
    size = ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated // 8
    return [element.value[i * size : (i + 1) * size] for i in range(count)]


# --- instances -------------------------------------------------------------------------------


def test_zip_holds_every_instance_byte_exact(
    tessera: RunningTessera, stored: list[DicomFile]
) -> None:
    by_study: dict[str, dict[str, str]] = {}
    for f in stored:
        by_study.setdefault(f.study_uid, {})[f"{f.study_uid}/{f.series_uid}/{f.sop_uid}.dcm"] = (
            f.sha256
        )
    for study, expected in by_study.items():
        response = requests.get(
            f"{tessera.root}/studies/{study}",
            headers={"Accept": "application/zip; transfer-syntax=*"},
            timeout=120,
        )
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/zip"
        with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
            assert archive.testzip() is None
            got = {n: hashlib.sha256(archive.read(n)).hexdigest() for n in archive.namelist()}
        assert got == expected


def test_series_retrieve_as_stored_is_byte_exact(
    tessera: RunningTessera, stored: list[DicomFile]
) -> None:
    by_series: dict[tuple[str, str], dict[str, str]] = {}
    for f in stored:
        by_series.setdefault((f.study_uid, f.series_uid), {})[f.sop_uid] = f.sha256
    for (study, series), expected in list(by_series.items())[:12]:
        response = requests.get(
            f"{tessera.root}/studies/{study}/series/{series}",
            headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
            timeout=120,
        )
        got = {}
        for headers, data in parts(response):
            sop = headers["content-location"].rsplit("/", 1)[1]
            got[sop] = hashlib.sha256(data).hexdigest()
        assert got == expected


def test_default_syntax_is_explicit_vr_little_endian(
    tessera: RunningTessera, stored: list[DicomFile]
) -> None:
    """PS3.18 §8.7.3.5.2: without transfer-syntax, Explicit VR Little Endian; decoded pixels
    equal pydicom's (video, which cannot be decoded, comes as stored)."""
    for f in stored:
        response = requests.get(
            url(tessera, f), headers={"Accept": 'multipart/related; type="application/dicom"'}
        )
        [(headers, data)] = parts(response)
        ds = pydicom.dcmread(io.BytesIO(data))
        if f.transfer_syntax_uid in VIDEO:
            assert hashlib.sha256(data).hexdigest() == f.sha256
            continue
        assert headers["content-type"] == f"application/dicom; transfer-syntax={EXPLICIT}", f.path
        assert ds.file_meta.TransferSyntaxUID == EXPLICIT
        assert ds.SOPInstanceUID == f.sop_uid
        if f.transfer_syntax_uid == EXPLICIT:
            assert hashlib.sha256(data).hexdigest() == f.sha256
        elif has_pixels(f) and f.path.stat().st_size < 4_000_000:
            expected = reference_pixels(f)
            if expected is not None:
                assert np.array_equal(ds.pixel_array, expected), f.path


TRANSCODES = [
    ("ct_jpegls_lossless.dcm", "1.2.840.10008.1.2.4.90"),
    ("ct_src_evrle.dcm", "1.2.840.10008.1.2.4.201"),
    ("ct_htj2k_lossless.dcm", "1.2.840.10008.1.2.5"),
    ("emri_jpeg_lossless_p14.dcm", "1.2.840.10008.1.2.4.80"),
    ("us_rgb_htj2k_lossless.dcm", "1.2.840.10008.1.2"),
]


@pytest.mark.parametrize(("name", "target"), TRANSCODES)
def test_lossless_transcodes(
    tessera: RunningTessera, stored: list[DicomFile], name: str, target: str
) -> None:
    f = next(f for f in stored if f.path.name == name)
    accept = f'multipart/related; type="application/dicom"; transfer-syntax={target}'
    for _ in range(2):  # the second answer comes from the codec's cache
        [(headers, data)] = parts(requests.get(url(tessera, f), headers={"Accept": accept}))
        assert headers["content-type"].endswith(target)
        ds = pydicom.dcmread(io.BytesIO(data))
        assert ds.file_meta.TransferSyntaxUID == target
        assert np.array_equal(ds.pixel_array, original(str(f.path)).pixel_array)


def test_transcode_that_cannot_be_done_is_406_or_falls_back(
    tessera: RunningTessera, stored: list[DicomFile]
) -> None:
    f = next(f for f in stored if f.path.name == "ct_src_evrle.dcm")
    jpeg = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'
    response = requests.get(url(tessera, f), headers={"Accept": jpeg})
    assert response.status_code == 406
    assert "8-bit" in response.json()["reason"]
    fallback = f'{jpeg}, multipart/related; type="application/dicom"; transfer-syntax=*;q=0.5'
    [(_, data)] = parts(requests.get(url(tessera, f), headers={"Accept": fallback}))
    assert hashlib.sha256(data).hexdigest() == f.sha256
    us = next(f for f in stored if f.path.name == "us8_rle.dcm")
    [(_headers, data)] = parts(requests.get(url(tessera, us), headers={"Accept": jpeg}))
    assert pydicom.dcmread(io.BytesIO(data)).LossyImageCompression == "01"


def test_accept_query_parameter(tessera: RunningTessera, stored: list[DicomFile]) -> None:
    f = next(f for f in stored if f.path.name == "ct_rle.dcm")
    response = requests.get(
        url(tessera, f),
        params={"accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
        headers={"Accept": "application/json"},
    )
    [(_headers, data)] = parts(response)
    assert hashlib.sha256(data).hexdigest() == f.sha256


# --- frames ----------------------------------------------------------------------------------


def test_every_frame_equals_pydicoms(tessera: RunningTessera, stored: list[DicomFile]) -> None:
    """Stored frames by byte range: native, encapsulated single- and multi-fragment, with and
    without offset tables."""
    checked = 0
    for f in stored:
        if not has_pixels(f) or f.transfer_syntax_uid in VIDEO | {DEFLATED}:
            continue
        expected = reference_frames(f)
        if not expected:
            continue
        numbers = ",".join(str(n) for n in range(1, len(expected) + 1))
        response = requests.get(
            f"{url(tessera, f)}/frames/{numbers}",
            headers={"Accept": 'multipart/related; type="*/*"; transfer-syntax=*'},
            timeout=120,
        )
        got = parts(response)
        assert [data for _, data in got] == expected, f.path
        location = got[-1][0]["content-location"]
        assert location.endswith(f"/frames/{len(expected)}")
        checked += 1
    assert checked >= 35


def test_frames_transcoded(tessera: RunningTessera, stored: list[DicomFile]) -> None:
    f = next(f for f in stored if f.path.name == "emri_jpeg_lossless_p14.dcm")
    pixels = original(str(f.path)).pixel_array
    response = requests.get(
        f"{url(tessera, f)}/frames/3,1",
        headers={"Accept": 'multipart/related; type="application/octet-stream"'},
    )
    got = parts(response)
    assert got[0][0]["content-type"] == f"application/octet-stream; transfer-syntax={EXPLICIT}"
    for (_, data), number in zip(got, (3, 1), strict=True):
        frame = np.frombuffer(data, dtype=pixels.dtype.newbyteorder("<")).reshape(64, 64)
        assert np.array_equal(frame, pixels[number - 1])
    jls = requests.get(
        f"{url(tessera, f)}/frames/2", headers={"Accept": 'multipart/related; type="image/jls"'}
    )
    [(headers, data)] = parts(jls)
    assert headers["content-type"] == "image/jls; transfer-syntax=1.2.840.10008.1.2.4.80"
    assert data[:2] == b"\xff\xd8"
    single = requests.get(f"{url(tessera, f)}/frames/2", headers={"Accept": "image/jls"})
    assert single.status_code == 200 and single.content == data


def test_transcoded_frames_again_and_after_the_codecs_copy_is_gone(
    tessera: RunningTessera, stored: list[DicomFile]
) -> None:
    """A frame transcoded once is read from where the codec put it (the gateway remembers);
    when that copy has gone, the codec is asked again and the answer is the same."""
    f = next(f for f in stored if f.path.name == "emri_jpeg_lossless_p14.dcm")
    target = f"{url(tessera, f)}/frames/5"
    accept = {"Accept": 'multipart/related; type="application/octet-stream"'}
    expected = original(str(f.path)).pixel_array[4].astype("<u2").tobytes()
    for _ in range(3):
        [(_, data)] = parts(requests.get(target, headers=accept))
        assert data == expected
    sha256 = hashlib.sha256(f.path.read_bytes()).hexdigest()
    copies = [p for p in (tessera.data_dir / "objects" / "derived" / sha256).rglob("*")]
    assert any(p.is_file() for p in copies), "the codec keeps what it transcodes"
    copies = [p for p in copies if p.is_file()]
    for copy in copies:
        copy.unlink()
    [(_, data)] = parts(requests.get(target, headers=accept))
    assert data == expected


def test_deflated_frames(tessera: RunningTessera, stored: list[DicomFile]) -> None:
    f = next(f for f in stored if f.path.name == "ct_deflate.dcm")
    pixels = original(str(f.path)).pixel_array
    got = parts(requests.get(f"{url(tessera, f)}/frames/1", headers={"Accept": OCTET_ANY}))
    frame = np.frombuffer(got[0][1], dtype=pixels.dtype.newbyteorder("<")).reshape(512, 512)
    assert np.array_equal(frame, pixels)


def test_dicomweb_client_series_metadata_and_frames(
    tessera: RunningTessera, stored: list[DicomFile]
) -> None:
    client = DICOMwebClient(url=tessera.root)
    f = next(f for f in stored if f.path.name == "emri_htj2k_lossless.dcm")
    metadata = client.retrieve_series_metadata(f.study_uid, f.series_uid)
    assert [m["00080018"]["Value"][0] for m in metadata] == [f.sop_uid]
    frames = client.retrieve_instance_frames(
        f.study_uid, f.series_uid, f.sop_uid, frame_numbers=[1, 10]
    )
    assert frames == [reference_frames(f)[0], reference_frames(f)[9]]
    native = client.retrieve_instance_frames(
        f.study_uid,
        f.series_uid,
        f.sop_uid,
        frame_numbers=[2],
        media_types=(("application/octet-stream", EXPLICIT),),
    )
    pixels = original(str(f.path)).pixel_array
    assert native[0] == pixels[1].astype(pixels.dtype.newbyteorder("<")).tobytes()


# --- metadata and bulk data ------------------------------------------------------------------


def _without_bulk(dataset: dict[str, Any]) -> dict[str, Any]:
    """A JSON dataset without bulk values, spelt one way where PS3.18 Annex F allows two:
    an empty value among several is null (Tessera, §F.2.5) or "" (pydicom), an empty sequence
    has no Value or an empty one."""
    result = {}
    for key, attr in dataset.items():
        if "BulkDataURI" in attr or "InlineBinary" in attr:
            continue
        if attr.get("vr") == "SQ":
            items = [_without_bulk(item) for item in attr.get("Value", [])]
            attr = {**attr, "Value": items} if items else {"vr": "SQ"}
        elif "Value" in attr:
            attr = {**attr, "Value": [None if v == "" else v for v in attr["Value"]]}
        result[key] = attr
    return result


def _bulk_uris(dataset: dict[str, Any]) -> Iterator[str]:
    for attr in dataset.values():
        if "BulkDataURI" in attr:
            yield attr["BulkDataURI"]
        for item in attr.get("Value", []) if attr.get("vr") == "SQ" else []:
            yield from _bulk_uris(item)


def test_metadata_equals_pydicoms(tessera: RunningTessera, stored: list[DicomFile]) -> None:
    mismatches = []
    for f in stored:
        response = requests.get(f"{url(tessera, f)}/metadata")
        assert response.status_code == 200
        [ours] = response.json()
        ds = pydicom.dcmread(f.path, stop_before_pixels=True)
        theirs = ds.to_json_dict(bulk_data_threshold=1024, bulk_data_element_handler=lambda e: "")
        theirs = {k: v for k, v in theirs.items() if not k.endswith("0000")}
        if _without_bulk(ours) != _without_bulk(theirs):
            mismatches.append(f.path.name)
        for uri in _bulk_uris(ours):
            assert uri.startswith(f"{url(tessera, f)}/bulkdata/"), uri
    assert not mismatches


def test_every_bulkdata_uri_resolves(tessera: RunningTessera, stored: list[DicomFile]) -> None:
    resolved = 0
    for f in stored:
        [metadata] = requests.get(f"{url(tessera, f)}/metadata").json()
        ds = original(str(f.path))
        for uri in _bulk_uris(metadata):
            path = uri.split("/bulkdata/")[1].split("/")
            if path[-1] in ("7FE00010", "7FE00008") and len(path) == 1:
                continue  # pixel data: /pixeldata and frames
            response = requests.get(uri, headers={"Accept": OCTET_ANY})
            [(_headers, data)] = parts(response)
            element: Any = ds
            for tag, item in zip(path[:-1:2], path[1::2], strict=True):
                element = element[int(tag, 16)].value[int(item)]
            value = element[int(path[-1], 16)].value
            if f.transfer_syntax_uid == "1.2.840.10008.1.2.2":
                continue  # values come from the Explicit VR Little Endian copy
            assert data == value + b"\x00" * (len(value) % 2), uri
            resolved += 1
    assert resolved >= 10


def test_pixeldata_and_ranges(tessera: RunningTessera, stored: list[DicomFile]) -> None:
    f = next(f for f in stored if f.path.name == "ct_src_evrle.dcm")
    value = original(str(f.path)).PixelData
    whole = requests.get(
        f"{url(tessera, f)}/pixeldata", headers={"Accept": "application/octet-stream"}
    )
    assert whole.status_code == 200 and whole.content == value
    assert whole.headers["Accept-Ranges"] == "bytes"
    part = requests.get(
        f"{url(tessera, f)}/bulkdata/7FE00010",
        headers={"Accept": "application/octet-stream", "Range": "bytes=1000-1999"},
    )
    assert part.status_code == 206
    assert part.content == value[1000:2000]
    assert part.headers["Content-Range"] == f"bytes 1000-1999/{len(value)}"
    tail = requests.get(
        f"{url(tessera, f)}/pixeldata",
        headers={"Accept": "application/octet-stream", "Range": "bytes=-16"},
    )
    assert tail.status_code == 206 and tail.content == value[-16:]
    beyond = requests.get(
        f"{url(tessera, f)}/pixeldata",
        headers={"Accept": "application/octet-stream", "Range": f"bytes={len(value)}-"},
    )
    assert beyond.status_code == 416
    multipart = requests.get(
        f"{url(tessera, f)}/pixeldata", headers={"Accept": OCTET_ANY, "Range": "bytes=0-9"}
    )
    # Multipart pixel data is one part per frame; Range applies to single-part values only.
    assert multipart.status_code == 200


def test_video_and_pdf_as_stored(tessera: RunningTessera, stored: list[DicomFile]) -> None:
    video = next(f for f in stored if f.path.name == "us_h264.dcm")
    stream = b"".join(reference_frames(video))
    response = requests.get(f"{url(tessera, video)}/pixeldata", headers={"Accept": "video/mp4"})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "video/mp4"
    assert response.content == stream
    ranged = requests.get(
        f"{url(tessera, video)}/pixeldata", headers={"Accept": "video/*", "Range": "bytes=100-"}
    )
    assert ranged.status_code == 206 and ranged.content == stream[100:]
    frames = requests.get(f"{url(tessera, video)}/frames/1", headers={"Accept": OCTET_ANY})
    assert frames.status_code == 406
    pdf = next(f for f in stored if f.path.name == "encapsulated_pdf.dcm")
    document = requests.get(
        f"{url(tessera, pdf)}/bulkdata/00420011", headers={"Accept": "application/pdf"}
    )
    assert document.headers["Content-Type"] == "application/pdf"
    assert document.content.startswith(b"%PDF")


def test_series_metadata_cache_etag_and_gzip(
    tessera: RunningTessera, stored: list[DicomFile]
) -> None:
    f = next(f for f in stored if f.path.name.startswith("wsi-000000_fixed"))
    series = f"{tessera.root}/studies/{f.study_uid}/series/{f.series_uid}/metadata"
    first = requests.get(series, headers={"Accept-Encoding": "identity"})
    assert first.status_code == 200
    assert len(first.json()) == 5
    tag = first.headers["ETag"]
    again = requests.get(series, headers={"If-None-Match": tag, "Accept-Encoding": "identity"})
    assert again.status_code == 304 and again.headers["ETag"] == tag
    cached = requests.get(series, headers={"Accept-Encoding": "identity"})
    assert cached.content == first.content
    raw = requests.get(series, headers={"Accept-Encoding": "gzip"}, stream=True)
    assert raw.headers["Content-Encoding"] == "gzip"
    assert raw.headers["ETag"] != tag
    assert gzip.decompress(raw.raw.read()) == first.content
    xml = requests.get(
        series, headers={"Accept": 'multipart/related; type="application/dicom+xml"'}
    )
    assert len(parts(xml)) == 5
    assert b"NativeDicomModel" in parts(xml)[0][1]


def test_series_metadata_built_ahead_is_what_the_first_request_gets(
    tessera: RunningTessera,
) -> None:
    """A few seconds after a series (of at least ``MIN_INSTANCES``) changed, the query service
    has stored its document with root-relative BulkDataURIs; the first request is answered
    from it, with this root."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    instances: list[tuple[str, bytes]] = []
    for number in range(1, MIN_INSTANCES + 1):
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = number
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        instances.append((ds.SOPInstanceUID, buffer.getvalue()))
    assert stow(tessera.root, [data for _, data in instances]).status_code == 200
    contents = contents_digest((uid, hashlib.sha256(data).hexdigest()) for uid, data in instances)
    relative = (
        tessera.data_dir
        / "objects"
        / (
            metadata_document_key(
                ds.StudyInstanceUID,
                ds.SeriesInstanceUID,
                metadata_document_digest(RELATIVE_ROOT, contents),
            )
            + ".json"
        )
    )
    deadline = time.monotonic() + 20
    while not relative.exists():
        assert time.monotonic() < deadline, "no series document was built ahead"
        time.sleep(0.2)
    documents = orjson.loads(relative.read_bytes())
    assert len(documents) == MIN_INSTANCES
    assert documents[0]["7FE00010"]["BulkDataURI"].startswith("studies/")
    # Marked, to tell the document built ahead from one the gateway would build itself.
    documents[0]["00204000"] = {"vr": "LT", "Value": ["built ahead"]}
    relative.write_bytes(orjson.dumps(documents))

    series = f"{tessera.root}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
    first = requests.get(f"{series}/metadata", headers={"Accept-Encoding": "identity"}).json()
    assert first[0]["00204000"]["Value"] == ["built ahead"]
    assert first[0]["7FE00010"]["BulkDataURI"].startswith(f"{tessera.root}/studies/")
    zipped = requests.get(f"{series}/metadata", headers={"Accept-Encoding": "gzip"})
    assert zipped.json() == first


# --- errors and WADO-URI ---------------------------------------------------------------------


def test_error_cases(tessera: RunningTessera, stored: list[DicomFile]) -> None:
    f = next(f for f in stored if f.path.name == "ct_src_evrle.dcm")
    unknown = f"{tessera.root}/studies/{f.study_uid}/series/{f.series_uid}/instances/1.2.3.4"
    cases = [
        (unknown, {}, 404),
        (f"{unknown}/frames/1", {"Accept": OCTET_ANY}, 404),
        (f"{unknown}/metadata", {}, 404),
        (f"{url(tessera, f)}/frames/2", {"Accept": OCTET_ANY}, 404),
        (f"{url(tessera, f)}/frames/0", {"Accept": OCTET_ANY}, 400),
        (f"{url(tessera, f)}/frames/1,x", {"Accept": OCTET_ANY}, 400),
        (f"{url(tessera, f)}/bulkdata/0010001", {}, 400),
        (f"{url(tessera, f)}/bulkdata/00100011", {"Accept": OCTET_ANY}, 404),
        (f"{tessera.root}/studies/1.2.x/metadata", {}, 400),
        (url(tessera, f), {"Accept": "text/html"}, 406),
        (f"{url(tessera, f)}/metadata", {"Accept": "image/png"}, 406),
        (f"{url(tessera, f)}/frames/1", {"Accept": "text/plain"}, 406),
        (
            f"{url(tessera, f)}/frames/1",
            {"Accept": f'multipart/related; type="image/jpeg"; transfer-syntax={JPEG_BASELINE}'},
            406,
        ),
    ]
    for target, headers, status in cases:
        response = requests.get(target, headers=headers)
        assert response.status_code == status, (target, headers, response.text[:200])
        assert response.json()["reason"]


def test_wado_uri(tessera: RunningTessera, stored: list[DicomFile]) -> None:
    f = next(f for f in stored if f.path.name == "ct_ivrle.dcm")
    wado = f"{tessera.root}/wado"
    base = {"requestType": "WADO", "studyUID": f.study_uid, "seriesUID": f.series_uid,
            "objectUID": f.sop_uid}  # fmt: skip
    dicom = requests.get(wado, params={**base, "contentType": "application/dicom"})
    assert dicom.status_code == 200
    assert dicom.headers["Content-Type"] == f"application/dicom; transfer-syntax={EXPLICIT}"
    assert pydicom.dcmread(io.BytesIO(dicom.content)).file_meta.TransferSyntaxUID == EXPLICIT
    stored_bytes = requests.get(
        wado, params={**base, "contentType": "application/dicom", "transferSyntax": "*"}
    )
    assert hashlib.sha256(stored_bytes.content).hexdigest() == f.sha256
    cases = [
        ({**base, "contentType": "application/dicom", "frameNumber": "1"}, 400),
        ({**base, "contentType": "application/dicom", "windowWidth": "400"}, 400),
        ({**base, "contentType": "application/dicom", "bogus": "1"}, 400),
        ({**base, "requestType": "WADOX"}, 400),
        ({k: v for k, v in base.items() if k != "objectUID"}, 400),
        ({**base, "objectUID": "1.2.x"}, 400),
        ({**base, "objectUID": "1.2.3.4", "contentType": "application/dicom"}, 404),
        ({**base, "frameNumber": "2"}, 400),
        ({**base, "windowCenter": "40"}, 400),
        ({**base, "region": "0.5,0,0.2,1"}, 400),
        ({**base, "rows": "0"}, 400),
        ({**base, "imageQuality": "101"}, 400),
        ({**base, "presentationUID": "1.2.3"}, 400),
        ({**base, "contentType": "text/html"}, 406),
    ]
    for params, status in cases:
        response = requests.get(wado, params=params)
        assert response.status_code == status, (params, response.text[:200])
        assert response.json()["reason"]


def test_wado_uri_rendered(tessera: RunningTessera, stored: list[DicomFile]) -> None:
    """Retrieve Rendered Instance (PS3.18 §9.5): JPEG by default for an image."""
    from PIL import Image

    f = next(f for f in stored if f.path.name == "ct_ivrle.dcm")
    base = {"requestType": "WADO", "studyUID": f.study_uid, "seriesUID": f.series_uid,
            "objectUID": f.sop_uid}  # fmt: skip
    wado = f"{tessera.root}/wado"
    default = requests.get(wado, params=base)
    assert default.status_code == 200, default.text
    assert default.headers["Content-Type"] == "image/jpeg"
    size = Image.open(io.BytesIO(default.content)).size
    cases = [
        ({"contentType": "image/png", "windowCenter": "40", "windowWidth": "400", "rows": "64"},
         "PNG", (64 * size[0] // size[1], 64)),
        ({"region": "0,0,0.5,0.5", "columns": "100"}, "JPEG", (100, 100 * size[1] // size[0])),
        ({"contentType": "image/gif,image/jpeg", "imageQuality": "50"}, "GIF", size),
        ({"annotation": "patient,technique", "frameNumber": "1"}, "JPEG", size),
    ]  # fmt: skip
    for params, kind, expected in cases:
        response = requests.get(wado, params={**base, **params})
        assert response.status_code == 200, (params, response.text[:200])
        image = Image.open(io.BytesIO(response.content))
        assert (image.format, image.size) == (kind, expected), params


def test_edge_case_files_round_trip(tessera: RunningTessera, stored: list[DicomFile]) -> None:
    for name in EDGE_CASES:
        path = get_testdata_file(name)
        assert path is not None
        f = next(f for f in stored if f.path == path or f.path.name == name)
        response = requests.get(
            url(tessera, f),
            headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
        )
        [(_, data)] = parts(response)
        assert hashlib.sha256(data).hexdigest() == f.sha256
