"""STOW-RS request media types and the Store Instances Response Module (PS3.18 Annex I)."""

from __future__ import annotations

import pytest

from tessera_common.errors import ErrorCode, FailureReason, TesseraError, WarningReason
from tessera_common.messages import InstanceOutcome
from tessera_gateway.stow import request_boundary, response_body

ROOT = "http://h/dicom-web"


@pytest.mark.parametrize(
    ("header", "boundary"),
    [
        ('multipart/related; type="application/dicom"; boundary=abc', "abc"),
        ("multipart/related; type=application/dicom; boundary=abc", "abc"),
        ('Multipart/Related; Type="Application/DICOM"; boundary="a b"', "a b"),
        ("multipart/related; boundary=xyz", "xyz"),
    ],
    ids=["quoted-type", "bare-type", "case-and-quoted-boundary", "no-type-param"],
)
def test_accepted_request_types(header: str, boundary: str) -> None:
    assert request_boundary(header) == boundary


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, ErrorCode.UNSUPPORTED_MEDIA_TYPE),
        ("application/dicom", ErrorCode.UNSUPPORTED_MEDIA_TYPE),
        ("multipart/mixed; boundary=a", ErrorCode.UNSUPPORTED_MEDIA_TYPE),
        (
            'multipart/related; type="application/dicom+pdf"; boundary=a',
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
        ),
        ('multipart/related; type="application/dicom"', ErrorCode.BAD_MULTIPART),
        ("garbage", ErrorCode.UNSUPPORTED_MEDIA_TYPE),
    ],
    ids=["missing", "single-part", "mixed", "unknown-part-type", "no-boundary", "garbage"],
)
def test_refused_request_types(header: str | None, code: ErrorCode) -> None:
    with pytest.raises(TesseraError) as caught:
        request_boundary(header)
    assert caught.value.code is code
    assert caught.value.reason


def _stored(sop: str, study: str = "1.1", warning: int | None = None) -> InstanceOutcome:
    return InstanceOutcome(
        stored=True,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        sop_instance_uid=sop,
        study_uid=study,
        series_uid="1.1.1",
        warning_reason=warning,
    )


def _failed(sop: str | None, reason: FailureReason) -> InstanceOutcome:
    return InstanceOutcome(
        stored=False,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2" if sop else None,
        sop_instance_uid=sop,
        failure_reason=int(reason),
        reason="because",
    )


def test_all_stored() -> None:
    body = response_body(ROOT, [_stored("1.1.1.1"), _stored("1.1.1.2")])
    assert body["00081190"] == {"vr": "UR", "Value": [f"{ROOT}/studies/1.1"]}
    assert "00081198" not in body
    items = body["00081199"]["Value"]
    assert [i["00081155"]["Value"][0] for i in items] == ["1.1.1.1", "1.1.1.2"]
    assert items[0]["00081190"]["Value"] == [f"{ROOT}/studies/1.1/series/1.1.1/instances/1.1.1.1"]


def test_mixed_outcomes_and_unknown_uids() -> None:
    body = response_body(
        ROOT,
        [
            _stored("1.1.1.1", warning=int(WarningReason.COERCION_OF_DATA_ELEMENTS)),
            _failed("1.1.1.9", FailureReason.STUDY_UID_MISMATCH),
            _failed(None, FailureReason.CANNOT_UNDERSTAND),
        ],
    )
    failed = body["00081198"]["Value"]
    assert failed[0] == {
        "00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
        "00081155": {"vr": "UI", "Value": ["1.1.1.9"]},
        "00081197": {"vr": "US", "Value": [0xC409]},
    }
    assert failed[1] == {"00081197": {"vr": "US", "Value": [0xC000]}}
    assert body["00081199"]["Value"][0]["00081196"] == {"vr": "US", "Value": [0xB000]}


def test_several_studies_leave_the_study_retrieve_url_empty() -> None:
    body = response_body(ROOT, [_stored("1.1.1.1", "1.1"), _stored("2.1.1.1", "2.1")])
    assert body["00081190"] == {"vr": "UR"}
