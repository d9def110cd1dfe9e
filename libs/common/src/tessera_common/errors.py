"""One error model for every service: an HTTP status and, where the standard has one, a DICOM
status code, kept together as a table.

Request-level problems (a bad UID in a path, an unsupported media type, a service that is down)
are ``TesseraError`` exceptions carrying an ``ErrorCode``; they travel over the bus as headers
and become one HTTP response in the gateway. Per-instance STOW outcomes are values
(``FailureReason`` / ``WarningReason``), never exceptions: one bad part never aborts the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    http_status: int
    title: str
    citation: str


class ErrorCode(Enum):
    """Request-level errors. The value is the stable wire name used in bus headers."""

    BAD_REQUEST = "bad-request"
    INVALID_UID = "invalid-uid"
    INVALID_QUERY = "invalid-query"
    BAD_MULTIPART = "bad-multipart"
    EMPTY_REQUEST = "empty-request"
    NOT_FOUND = "not-found"
    NOT_ACCEPTABLE = "not-acceptable"
    UNSUPPORTED_MEDIA_TYPE = "unsupported-media-type"
    PAYLOAD_TOO_LARGE = "payload-too-large"
    CONFLICT = "conflict"
    SERVICE_UNAVAILABLE = "service-unavailable"
    REQUEST_TIMEOUT = "request-timeout"
    TIMEOUT = "timeout"
    INTERNAL = "internal"

    @property
    def spec(self) -> ErrorSpec:
        return ERROR_TABLE[self]

    @property
    def http_status(self) -> int:
        return ERROR_TABLE[self].http_status


ERROR_TABLE: dict[ErrorCode, ErrorSpec] = {
    ErrorCode.BAD_REQUEST: ErrorSpec(400, "Bad Request", "PS3.18 §8.5"),
    ErrorCode.INVALID_UID: ErrorSpec(400, "Invalid UID", "PS3.5 §9.1; PS3.18 §8.2"),
    ErrorCode.INVALID_QUERY: ErrorSpec(400, "Invalid query parameter", "PS3.18 §8.3.4"),
    ErrorCode.BAD_MULTIPART: ErrorSpec(400, "Malformed multipart body", "PS3.18 §8.6.1"),
    ErrorCode.EMPTY_REQUEST: ErrorSpec(400, "Empty request body", "PS3.18 §10.5.3"),
    ErrorCode.NOT_FOUND: ErrorSpec(404, "Not Found", "PS3.18 §8.5"),
    ErrorCode.NOT_ACCEPTABLE: ErrorSpec(406, "Not Acceptable", "PS3.18 §8.7.4"),
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: ErrorSpec(
        415, "Unsupported Media Type", "PS3.18 §10.5.3 Table 10.5.3-1"
    ),
    ErrorCode.PAYLOAD_TOO_LARGE: ErrorSpec(413, "Payload Too Large", "PS3.18 §8.5"),
    ErrorCode.CONFLICT: ErrorSpec(409, "Conflict", "PS3.18 §10.5.3 Table 10.5.3-1"),
    ErrorCode.SERVICE_UNAVAILABLE: ErrorSpec(503, "Service Unavailable", "PS3.18 §8.5"),
    ErrorCode.REQUEST_TIMEOUT: ErrorSpec(408, "Request Timeout", "RFC 9110 §15.5.9"),
    ErrorCode.TIMEOUT: ErrorSpec(504, "Gateway Timeout", "RFC 9110 §15.6.5"),
    ErrorCode.INTERNAL: ErrorSpec(500, "Internal Server Error", "PS3.18 §8.5"),
}


class TesseraError(Exception):
    """A request-level failure with a code from ``ERROR_TABLE`` and a reason for the user."""

    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason

    @property
    def http_status(self) -> int:
        return self.code.http_status

    def __repr__(self) -> str:
        return f"TesseraError({self.code.value!r}, {self.reason!r})"


class FailureReason(IntEnum):
    """Failure Reason (0008,1197) values for the Store Instances Response.

    PS3.18 Annex I.2.2, Table I.2-2. ``STUDY_UID_MISMATCH`` is implementation specific (in the
    Cxxx "cannot understand" range the table reserves) and is listed in docs/CONFORMANCE.md.
    ``DUPLICATE_SOP_INSTANCE`` is the DIMSE status "Duplicate SOP Instance" (0111H, PS3.7
    Annex C), which Table I.2-2 allows as an additional code ("Additional codes may be used
    ... to address the semantics of other issues"); the store answers it under
    ``TESSERA_DUPLICATE_POLICY=reject`` for a SOP Instance UID already stored with other bytes.
    """

    PROCESSING_FAILURE = 0x0110
    DUPLICATE_SOP_INSTANCE = 0x0111
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    OUT_OF_RESOURCES = 0xA700
    DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    CANNOT_UNDERSTAND = 0xC000
    TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122
    STUDY_UID_MISMATCH = 0xC409


class WarningReason(IntEnum):
    """Warning Reason (0008,1196) values, PS3.18 Annex I.2.1, Table I.2-1."""

    COERCION_OF_DATA_ELEMENTS = 0xB000
    ELEMENTS_DISCARDED = 0xB006
    DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xB007


def stow_response_status(stored: int, failed: int, warned: int) -> int:
    """HTTP status of a STOW-RS response, PS3.18 §10.5.3 Table 10.5.3-1.

    200 when every instance was stored without warning; 202 when some were stored but others
    failed or carry warnings; 409 when none could be stored.
    """
    if stored == 0:
        return 409
    if failed or warned:
        return 202
    return 200
