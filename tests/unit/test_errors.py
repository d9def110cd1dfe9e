"""The error table: HTTP status and DICOM status codes, as the standard assigns them."""

from __future__ import annotations

import pytest

from tessera_common.errors import (
    ERROR_TABLE,
    ErrorCode,
    FailureReason,
    TesseraError,
    WarningReason,
    stow_response_status,
)


def test_every_error_code_has_a_spec() -> None:
    assert set(ERROR_TABLE) == set(ErrorCode)
    for code, spec in ERROR_TABLE.items():
        assert 400 <= spec.http_status <= 599, code
        assert spec.title and spec.citation.startswith(("PS3.", "RFC")), code


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (ErrorCode.INVALID_UID, 400),
        (ErrorCode.BAD_MULTIPART, 400),
        (ErrorCode.EMPTY_REQUEST, 400),
        (ErrorCode.NOT_FOUND, 404),
        (ErrorCode.NOT_ACCEPTABLE, 406),
        (ErrorCode.CONFLICT, 409),
        (ErrorCode.PAYLOAD_TOO_LARGE, 413),
        (ErrorCode.UNSUPPORTED_MEDIA_TYPE, 415),
        (ErrorCode.INTERNAL, 500),
        (ErrorCode.SERVICE_UNAVAILABLE, 503),
        (ErrorCode.TIMEOUT, 504),
    ],
    ids=lambda v: v.value if isinstance(v, ErrorCode) else str(v),
)
def test_http_status(code: ErrorCode, status: int) -> None:
    assert code.http_status == status
    assert TesseraError(code, "why").http_status == status


@pytest.mark.parametrize(
    ("reason", "value", "range_low", "range_high"),
    [
        (FailureReason.PROCESSING_FAILURE, 0x0110, 0x0110, 0x0110),
        (FailureReason.SOP_CLASS_NOT_SUPPORTED, 0x0122, 0x0122, 0x0122),
        (FailureReason.OUT_OF_RESOURCES, 0xA700, 0xA700, 0xA7FF),
        (FailureReason.DATASET_DOES_NOT_MATCH_SOP_CLASS, 0xA900, 0xA900, 0xA9FF),
        (FailureReason.CANNOT_UNDERSTAND, 0xC000, 0xC000, 0xCFFF),
        (FailureReason.TRANSFER_SYNTAX_NOT_SUPPORTED, 0xC122, 0xC122, 0xC122),
        (FailureReason.STUDY_UID_MISMATCH, 0xC409, 0xC000, 0xCFFF),
    ],
    ids=lambda v: v.name if isinstance(v, FailureReason) else hex(v),
)
def test_failure_reasons_follow_table_i_2_2(
    reason: FailureReason, value: int, range_low: int, range_high: int
) -> None:
    assert int(reason) == value
    assert range_low <= value <= range_high


def test_warning_reasons_follow_table_i_2_1() -> None:
    assert [int(w) for w in WarningReason] == [0xB000, 0xB006, 0xB007]


@pytest.mark.parametrize(
    ("stored", "failed", "warned", "status"),
    [
        (3, 0, 0, 200),
        (3, 0, 1, 202),
        (2, 1, 0, 202),
        (0, 3, 0, 409),
        (0, 0, 0, 409),
    ],
    ids=["all-stored", "warning", "some-failed", "all-failed", "nothing"],
)
def test_stow_status_table_10_5_3_1(stored: int, failed: int, warned: int, status: int) -> None:
    assert stow_response_status(stored, failed, warned) == status
