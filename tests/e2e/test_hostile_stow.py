"""Hostile STOW requests: each gets the right per-instance failure or 4xx, good parts survive,
and nothing partial becomes visible."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pydicom
import pytest
import requests
from tests.support.http import multipart_body, sequence_items, stow
from tests.support.system import RunningTessera, start_tessera

from bench.synthetic import SyntheticInstance, ct_series
from tessera_common.errors import FailureReason

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tessera(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTessera]:
    running = start_tessera(tmp_path_factory.mktemp("hostile") / "data")
    yield running
    assert running.stop() == 0, running.log_tail()


def _instances(count: int, seed: int) -> list[SyntheticInstance]:
    return list(ct_series(count, seed=seed, rows=32, columns=32))


def _rewrite(instance: SyntheticInstance, **changes: str) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(instance.data))
    for keyword, value in changes.items():
        if value == "":
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    if changes.get("SOPInstanceUID"):
        ds.file_meta.MediaStorageSOPInstanceUID = changes["SOPInstanceUID"]
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=False)
    return out.getvalue()


def _visible(root: str, instance: SyntheticInstance) -> bool:
    response = requests.get(
        f"{root}/instances", params={"SOPInstanceUID": instance.sop_uid}, timeout=30
    )
    return response.status_code == 200


def _failure_reasons(response: requests.Response) -> list[int]:
    return [
        item["00081197"]["Value"][0]  # type: ignore[index]
        for item in sequence_items(response.json(), "00081198")
    ]


BAD_PARTS = {
    "truncated-part": lambda i: i.data[: len(i.data) // 2],
    "non-dicom-part": lambda i: b"%PDF-1.4 definitely not DICOM" * 10,
    "missing-sop-instance-uid": lambda i: _rewrite(i, SOPInstanceUID=""),
    "uid-with-illegal-characters": lambda i: _rewrite(i, SeriesInstanceUID="1.2.abc.4"),
    "uid-too-long": lambda i: _rewrite(i, StudyInstanceUID="1." + "2" * 70),
    "empty-part": lambda i: b"",
}
EXPECTED_REASON = {
    "truncated-part": FailureReason.CANNOT_UNDERSTAND,
    "non-dicom-part": FailureReason.CANNOT_UNDERSTAND,
    "missing-sop-instance-uid": FailureReason.DATASET_DOES_NOT_MATCH_SOP_CLASS,
    "uid-with-illegal-characters": FailureReason.DATASET_DOES_NOT_MATCH_SOP_CLASS,
    "uid-too-long": FailureReason.DATASET_DOES_NOT_MATCH_SOP_CLASS,
    "empty-part": FailureReason.CANNOT_UNDERSTAND,
}


@pytest.mark.parametrize("case", sorted(BAD_PARTS), ids=sorted(BAD_PARTS))
def test_bad_part_between_good_parts(tessera: RunningTessera, case: str) -> None:
    good_before, bad_source, good_after = _instances(3, seed=hash(case) % 10_000)
    response = stow(tessera.root, [good_before.data, BAD_PARTS[case](bad_source), good_after.data])
    assert response.status_code == 202, response.text
    assert _failure_reasons(response) == [EXPECTED_REASON[case]]
    assert "Warning" in response.headers
    referenced = sequence_items(response.json(), "00081199")
    assert len(referenced) == 2
    assert _visible(tessera.root, good_before) and _visible(tessera.root, good_after)
    assert not _visible(tessera.root, bad_source)


def test_wrong_study_in_path(tessera: RunningTessera) -> None:
    (instance,) = _instances(1, seed=101)
    other_study = "1.2.3.4.5"
    response = stow(tessera.root, [instance.data], study_uid=other_study)
    assert response.status_code == 409, response.text
    assert _failure_reasons(response) == [FailureReason.STUDY_UID_MISMATCH]
    assert not _visible(tessera.root, instance)
    response = stow(tessera.root, [instance.data], study_uid=instance.study_uid)
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("application/json", 415),
        ("text/plain", 415),
        ('multipart/related; type="application/dicom+xml"; boundary=x', 400),  # not multipart
        ("multipart/related; type=application/dicom", 400),  # no boundary
        ("this is not a media type", 415),
    ],
    ids=["json", "text", "xml-parts", "no-boundary", "garbage"],
)
def test_wrong_content_type(tessera: RunningTessera, content_type: str, status: int) -> None:
    (instance,) = _instances(1, seed=202)
    response = requests.post(
        f"{tessera.root}/studies",
        data=instance.data,
        headers={"Content-Type": content_type},
        timeout=30,
    )
    assert response.status_code == status, response.text
    assert response.json()["reason"]
    assert not _visible(tessera.root, instance)


def test_empty_body(tessera: RunningTessera) -> None:
    response = requests.post(
        f"{tessera.root}/studies",
        data=b"",
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'},
        timeout=30,
    )
    assert response.status_code == 400
    assert "empty" in response.json()["reason"]


def test_truncated_multipart_stores_nothing(tessera: RunningTessera) -> None:
    instances = _instances(3, seed=303)
    body, content_type = multipart_body([i.data for i in instances])
    cut = body[: len(body) - 200]  # the last part and the closing delimiter are lost
    response = requests.post(
        f"{tessera.root}/studies", data=cut, headers={"Content-Type": content_type}, timeout=30
    )
    assert response.status_code == 400, response.text
    assert "part" in response.json()["reason"]
    assert not any(_visible(tessera.root, i) for i in instances)
    leftovers = list((tessera.data_dir / "objects" / "incoming").glob("*"))
    assert leftovers == []


@pytest.mark.parametrize(
    "path",
    ["/studies/1.2.abc", "/studies/1.2.3/series/..%2F..", "/studies/" + "1" * 65],
    ids=["letters", "traversal", "too-long"],
)
def test_invalid_uids_in_paths(tessera: RunningTessera, path: str) -> None:
    response = requests.get(tessera.root + path, timeout=30)
    assert response.status_code == 400, response.text
    assert "UID" in response.json()["reason"]


def test_unknown_resources_are_404(tessera: RunningTessera) -> None:
    response = requests.get(f"{tessera.root}/studies/1.2.3.999", timeout=30)
    assert response.status_code == 404
    response = requests.get(f"{tessera.root}/studies/1.2.3.999/series/1.2/metadata", timeout=30)
    assert response.status_code == 404
