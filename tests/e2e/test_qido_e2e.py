"""QIDO-RS end to end: the reference corpus stored over STOW-RS into a running Tessera, then
searched over HTTP — a sample of the reference table through dicomweb-client, the XML
representation, and the status codes of PS3.18 §10.6.3."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pydicom.data
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
from tests.support.dicom_files import SHARED_TESTDATA
from tests.support.http import stow
from tests.support.qido_corpus import CHARSET_FILES, SHARED_FILES, corpus
from tests.support.qido_reference import CASES, STUDY, UID_TAG, QueryCase
from tests.support.system import RunningTessera, start_tessera

from tessera_common.dicom_json import element
from tessera_common.messages import InstanceRecord, QueryLevel
from tessera_gateway.mediatype import parse_content_type
from tessera_gateway.multipart import iter_parts

pytestmark = pytest.mark.slow

SAMPLE = [
    "PN: Latin-1 (ISO_IR 100)",
    "PN: Japanese ideographic (ISO 2022 IR 87)",
    "PN: half-width katakana (ISO 2022 IR 13) equals full-width",
    "PN: Korean (ISO 2022 IR 149)",
    "PN: Chinese GB18030",
    "wildcard: prefix",
    "fuzzy: accent-insensitive word prefix",
    "range: open end",
    "timezone: date in UTC finds a study stored at -0500",
    "multiple: ModalitiesInStudy any of",
    'empty: "" on a person name',
    "sequence: one key",
    "relational: study and series keys at instance level",
    "UID list with commas",
    "scoped: series of a study",
]
SAMPLE_CASES = [case for case in CASES if case.id in SAMPLE]
NATIVE = {"d": "http://dicom.nema.org/PS3.19/models/NativeDICOM"}


def _synthetic_file(record: InstanceRecord, metadata: dict[str, Any]) -> bytes:
    """A PS3.10 file holding a synthetic instance's JSON (UTF-8 text)."""
    ds = Dataset.from_json({**metadata, "00080005": element("CS", "ISO_IR 192")})
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = record.sop_class_uid
    ds.file_meta.MediaStorageSOPInstanceUID = record.sop_uid
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def corpus_files() -> list[bytes]:
    charset_dir = Path(pydicom.data.__file__).parent / "charset_files"
    files = [(charset_dir / f"{name}.dcm").read_bytes() for name in CHARSET_FILES]
    files += [(SHARED_TESTDATA / relative).read_bytes() for relative in SHARED_FILES.values()]
    real = len(files)
    files += [_synthetic_file(r, m) for r, m in corpus().instances[real:]]
    return files


@pytest.fixture(scope="module")
def tessera(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTessera]:
    running = start_tessera(tmp_path_factory.mktemp("qido") / "data")
    files = corpus_files()
    for start in range(0, len(files), 10):
        response = stow(running.root, files[start : start + 10])
        assert response.status_code in (200, 202), (response.status_code, response.text)
        assert "00081198" not in response.json(), response.text  # nothing failed
    yield running
    assert running.stop() == 0, running.log_tail()


def _search(client: DICOMwebClient, case: QueryCase) -> list[dict[str, Any]]:
    request = case.request(corpus())
    filters: dict[str, Any] = {}
    for name, value in case.params:
        filters[name] = value if "{" not in value else _uids(case, value)
    study = request.study_uid
    series = request.series_uid
    if case.level is QueryLevel.STUDY:
        return list(client.search_for_studies(search_filters=filters))
    if case.level is QueryLevel.SERIES:
        return list(client.search_for_series(study_instance_uid=study, search_filters=filters))
    return list(
        client.search_for_instances(
            study_instance_uid=study, series_instance_uid=series, search_filters=filters
        )
    )


def _uids(case: QueryCase, value: str) -> str:
    from tests.support.qido_reference import _resolve

    return _resolve(corpus(), value)


@pytest.mark.parametrize("case", SAMPLE_CASES, ids=lambda case: case.id)
def test_reference_sample_through_dicomweb_client(tessera: RunningTessera, case: QueryCase) -> None:
    client = DICOMwebClient(url=tessera.root)
    results = _search(client, case)
    tag = UID_TAG[case.level]
    found = sorted(corpus().name_of(case.level, r[tag]["Value"][0]) for r in results)
    assert found == case.expected_names(corpus())


def test_sample_covers_the_charsets() -> None:
    assert len(SAMPLE_CASES) == len(SAMPLE)


def test_xml_representation(tessera: RunningTessera) -> None:
    response = requests.get(
        f"{tessera.root}/studies",
        params={"PatientName": "*^Tarou*", "includefield": "PatientName"},
        headers={"Accept": 'multipart/related; type="application/dicom+xml"'},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    media = parse_content_type(response.headers["Content-Type"])
    assert media.essence == "multipart/related"
    assert media.params["type"] == "application/dicom+xml"
    parts = iter_parts(response.content, media.params["boundary"])
    assert len(parts) == 1
    headers, body = parts[0]
    assert headers["content-type"] == "application/dicom+xml"
    root = ET.fromstring(body)
    name = root.find("d:DicomAttribute[@keyword='PatientName']/d:PersonName", NATIVE)
    assert name is not None
    assert name.findtext("d:Ideographic/d:FamilyName", namespaces=NATIVE) == "山田"
    url = root.findtext("d:DicomAttribute[@tag='00081190']/d:Value", namespaces=NATIVE)
    assert url == f"{tessera.root}/studies/{corpus().uid(STUDY, 'chrH31')}"


def test_accept_query_parameter_chooses_xml(tessera: RunningTessera) -> None:
    response = requests.get(
        f"{tessera.root}/series",
        params={"Modality": "SEG", "accept": "application/dicom+xml"},
        timeout=30,
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("multipart/related")


@pytest.mark.parametrize(
    ("path", "params", "status", "reason"),
    [
        ("/studies", {"PatientID": "nobody"}, 204, None),
        ("/studies", {"PatientNmae": "x"}, 400, "PatientNmae"),
        ("/studies", {"StudyDate": "20240102-20240101"}, 400, "impossible range"),
        ("/studies", {"StudyDate": "2024-01-01"}, 400, "StudyDate"),
        ("/studies", {"limit": "-1"}, 400, "limit"),
        ("/studies", {"offset": "x"}, 400, "offset"),
        ("/studies", {"SliceThickness": "1"}, 400, "instance"),
        ("/series", {"RequestAttributesSequence": "x"}, 400, "sequence"),
        ("/instances", {"SOPInstanceUID": "1.2.x"}, 400, "UID"),
        ("/studies", {"TimezoneOffsetFromUTC": "+2500"}, 400, "TimezoneOffsetFromUTC"),
    ],
)
def test_status_codes(
    tessera: RunningTessera, path: str, params: dict[str, str], status: int, reason: str | None
) -> None:
    response = requests.get(f"{tessera.root}{path}", params=params, timeout=30)
    assert response.status_code == status, response.text
    if reason is not None:
        assert reason in response.json()["reason"]
    if status == 204:
        assert response.content == b""


def test_not_acceptable(tessera: RunningTessera) -> None:
    response = requests.get(f"{tessera.root}/studies", headers={"Accept": "image/jpeg"}, timeout=30)
    assert response.status_code == 406


def test_limit_warning_and_paging(tessera: RunningTessera) -> None:
    first = requests.get(f"{tessera.root}/studies", params={"limit": "5"}, timeout=30)
    assert first.status_code == 200
    assert len(first.json()) == 5
    assert first.headers["Warning"].startswith("299 ")
    rest = requests.get(
        f"{tessera.root}/studies", params={"limit": "100", "offset": "5"}, timeout=30
    )
    assert "Warning" not in rest.headers
    uids = [s["0020000D"]["Value"][0] for s in first.json() + rest.json()]
    assert len(uids) == len(set(uids)) == len(corpus().names[STUDY])
