"""End to end: the whole system as separate processes over a real nats-server.

Every storable file in shared/testdata and pydicom's test files is stored, found by QIDO and
retrieved byte-exact; dicomweb-client (a third-party DICOMweb client) stores, searches and
retrieves too.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from tests.support.dicom_files import (
    TRUNCATED,
    DicomFile,
    all_files,
    shared_files,
    split_by_sop,
    storable_files,
)
from tests.support.http import retrieve_parts, sequence_items, stow
from tests.support.system import RunningTessera, start_tessera

from bench.synthetic import ct_series

pytestmark = pytest.mark.slow

FIRST, LATER = split_by_sop(storable_files())
BATCH = 25


@pytest.fixture(scope="module")
def tessera(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTessera]:
    running = start_tessera(tmp_path_factory.mktemp("e2e") / "data")
    yield running
    assert running.stop() == 0, running.log_tail()


@pytest.fixture(scope="module")
def stored(tessera: RunningTessera) -> list[DicomFile]:
    """Store the first file of every SOP Instance UID, in batches of raw PS3.10 bytes."""
    for start in range(0, len(FIRST), BATCH):
        batch = FIRST[start : start + BATCH]
        response = stow(tessera.root, [f.path.read_bytes() for f in batch])
        assert response.status_code in (200, 202), (response.status_code, response.text)
        assert "00081198" not in response.json(), response.headers.get("Warning")
        referenced = sequence_items(response.json(), "00081199")
        assert sorted(i["00081155"]["Value"][0] for i in referenced) == sorted(  # type: ignore[index]
            f.sop_uid for f in batch
        )
    return FIRST


def test_truncated_files_are_refused(tessera: RunningTessera) -> None:
    broken = [f for f in all_files() if f.path.name in TRUNCATED]
    assert len(broken) == len(TRUNCATED)
    response = stow(tessera.root, [f.path.read_bytes() for f in broken])
    assert response.status_code == 409, response.text
    failed = sequence_items(response.json(), "00081198")
    assert [i["00081197"]["Value"] for i in failed] == [[0xC000]] * len(broken)  # type: ignore[index]
    assert "truncated" in response.headers["Warning"]


def test_shared_testdata_is_all_storable() -> None:
    assert len(shared_files()) == 47


def test_every_instance_is_found_by_qido(tessera: RunningTessera, stored: list[DicomFile]) -> None:
    client = DICOMwebClient(url=tessera.root)
    for f in stored:
        found = client.search_for_instances(
            study_instance_uid=f.study_uid, search_filters={"SOPInstanceUID": f.sop_uid}
        )
        assert len(found) == 1, f.path
        assert found[0]["00080016"]["Value"] == [f.sop_class_uid]
        assert found[0]["0020000E"]["Value"] == [f.series_uid]


def test_study_level_search_counts(tessera: RunningTessera, stored: list[DicomFile]) -> None:
    client = DICOMwebClient(url=tessera.root)
    by_study: dict[str, set[str]] = {}
    for f in stored:
        by_study.setdefault(f.study_uid, set()).add(f.sop_uid)
    studies = client.search_for_studies(search_filters={"limit": 10000})
    assert {s["0020000D"]["Value"][0] for s in studies} == set(by_study)
    for study in studies:
        uid = study["0020000D"]["Value"][0]
        assert study["00201208"]["Value"] == [len(by_study[uid])]
        assert study["00081190"]["Value"][0] == f"{tessera.root}/studies/{uid}"


def test_retrieve_is_byte_exact(tessera: RunningTessera, stored: list[DicomFile]) -> None:
    for f in stored:
        url = f"{tessera.root}/studies/{f.study_uid}/series/{f.series_uid}/instances/{f.sop_uid}"
        parts = retrieve_parts(url)
        assert len(parts) == 1, f.path
        headers, data = parts[0]
        assert hashlib.sha256(data).hexdigest() == f.sha256, f.path
        assert headers["content-type"].endswith(f"transfer-syntax={f.transfer_syntax_uid}")


def test_study_retrieve_returns_every_instance(
    tessera: RunningTessera, stored: list[DicomFile]
) -> None:
    by_study: dict[str, dict[str, str]] = {}
    for f in stored:
        by_study.setdefault(f.study_uid, {})[f.sop_uid] = f.sha256
    study_uid, expected = max(by_study.items(), key=lambda kv: len(kv[1]))
    parts = retrieve_parts(f"{tessera.root}/studies/{study_uid}")
    got = {}
    for _, data in parts:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        got[str(ds.SOPInstanceUID)] = hashlib.sha256(data).hexdigest()
    assert got == expected


def test_dicomweb_client_round_trip(tessera: RunningTessera) -> None:
    client = DICOMwebClient(url=tessera.root)
    instances = list(ct_series(3, seed=7, rows=64, columns=64))
    datasets = [pydicom.dcmread(io.BytesIO(i.data)) for i in instances]
    result = client.store_instances(datasets=datasets)
    assert len(result.ReferencedSOPSequence) == 3
    assert "FailedSOPSequence" not in result
    study_uid = instances[0].study_uid
    series = client.search_for_series(study_instance_uid=study_uid)
    assert [s["00080060"]["Value"] for s in series] == [["CT"]]
    assert series[0]["00201209"]["Value"] == [3]
    retrieved = client.retrieve_instance(study_uid, instances[1].series_uid, instances[1].sop_uid)
    assert retrieved.SOPInstanceUID == instances[1].sop_uid
    assert retrieved.PixelData == datasets[1].PixelData
    metadata = client.retrieve_series_metadata(study_uid, instances[0].series_uid)
    assert len(metadata) == 3
    names = {m["00100010"]["Value"][0]["Alphabetic"] for m in metadata}
    assert names == {str(datasets[0].PatientName)}
    pixel = metadata[0]["7FE00010"]
    assert pixel["BulkDataURI"].startswith(f"{tessera.root}/studies/{study_uid}/")


def test_restored_sop_instance_replaces_the_old_one(
    tessera: RunningTessera, stored: list[DicomFile]
) -> None:
    """Files that re-use a SOP Instance UID (same image, other transfer syntax) overwrite."""
    latest: dict[str, DicomFile] = {}
    for f in LATER:
        latest[f.sop_uid] = f
    for f in latest.values():
        response = stow(tessera.root, [f.path.read_bytes()])
        assert response.status_code in (200, 202), response.text
        assert "00081198" not in response.json()
    for f in latest.values():
        url = f"{tessera.root}/studies/{f.study_uid}/series/{f.series_uid}/instances/{f.sop_uid}"
        ((_, data),) = retrieve_parts(url)
        assert hashlib.sha256(data).hexdigest() == f.sha256, f.path


def test_qido_filters(tessera: RunningTessera, stored: list[DicomFile]) -> None:
    f = next(x for x in stored if "ct_src_evrle" in str(x.path))
    ds = pydicom.dcmread(f.path, stop_before_pixels=True)
    root = tessera.root
    for params in (
        {"StudyInstanceUID": f.study_uid},
        {"PatientID": str(ds.PatientID)},
        {"00100020": str(ds.PatientID)},
        {"StudyDate": str(ds.StudyDate)},
    ):
        response = requests.get(f"{root}/studies", params=params, timeout=30)
        assert response.status_code == 200, (params, response.text)
        assert f.study_uid in {s["0020000D"]["Value"][0] for s in response.json()}
    response = requests.get(f"{root}/studies", params={"PatientID": "no-such-patient"}, timeout=30)
    assert response.status_code == 204
    response = requests.get(f"{root}/series", params={"Modality": "CT", "limit": 2}, timeout=30)
    assert response.status_code == 200
    assert len(response.json()) == 2
    assert "Warning" in response.headers
