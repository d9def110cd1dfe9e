"""UID validation (PS3.5 §9.1) as a table of legal and illegal inputs."""

from __future__ import annotations

import pytest

from tessera_common.uid import (
    UID_MAX_LENGTH,
    InvalidUIDError,
    generate_uid,
    is_valid_uid,
    validate_uid,
)

VALID = {
    "root-only": "1",
    "typical": "1.2.840.10008.5.1.4.1.1.2",
    "zero-component": "1.2.0.3",
    "exactly-64": "1." + "2" * 62,
    "uuid-derived": "2.25.329800735698586629295641978511506172918",
}
INVALID = {
    "empty": "",
    "letters": "1.2.abc",
    "trailing-dot": "1.2.3.",
    "leading-dot": ".1.2",
    "double-dot": "1..2",
    "space": "1.2 .3",
    "newline-injection": "1.2.3\nINFO forged log line",
    "path-traversal": "../../etc/passwd",
    "slash": "1.2/3",
    "too-long-65": "1." + "2" * 63,
    "unicode-digits": "1.\uff12.3",
    "sign": "-1.2",
    "sql": "1' OR '1'='1",
}


@pytest.mark.parametrize("value", VALID.values(), ids=VALID.keys())
def test_valid(value: str) -> None:
    assert is_valid_uid(value)
    assert validate_uid(value) == value


@pytest.mark.parametrize("value", INVALID.values(), ids=INVALID.keys())
def test_invalid(value: str) -> None:
    assert not is_valid_uid(value)
    with pytest.raises(InvalidUIDError) as caught:
        validate_uid(value, what="Study Instance UID")
    message = str(caught.value)
    assert "Study Instance UID" in message
    assert "\n" not in message, "a rejected UID must not be able to forge log lines"


@pytest.mark.parametrize(
    ("value", "strict_ok"),
    [("1.2.3", True), ("1.02.3", False), ("0.1", True), ("1.2.00", False)],
    ids=["plain", "leading-zero", "zero-root", "double-zero"],
)
def test_strict_mode_rejects_leading_zeros(value: str, strict_ok: bool) -> None:
    assert is_valid_uid(value)
    assert is_valid_uid(value, strict=True) is strict_ok


def test_generated_uids_are_valid_and_unique() -> None:
    uids = {generate_uid() for _ in range(1000)}
    assert len(uids) == 1000
    assert all(is_valid_uid(u, strict=True) and len(u) <= UID_MAX_LENGTH for u in uids)
