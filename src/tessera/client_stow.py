"""What a STOW-RS answer says about each file sent (PS3.18 §10.5.3, Annex I).

Pure: :func:`parse_store_response` reads the Store Instances Response Module (DICOM JSON) and
the ``Warning`` headers; :func:`attribute` turns it into one :class:`FileOutcome` per part of
the request, matching items to files by SOP Instance UID. Only the client needs these UIDs,
and only when the answer is not a plain success, so files are not parsed otherwise.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
FAILURE_REASON = "00081197"
WARNING_REASON = "00081196"
REFERENCED_SOP_CLASS_UID = "00081150"
REFERENCED_SOP_INSTANCE_UID = "00081155"

FAILURE_REASONS: Mapping[int, str] = {
    0x0110: "Processing failure",
    0x0111: "Duplicate SOP Instance",
    0x0122: "SOP Class not supported",
    0x0124: "Not authorized",
    0xA700: "Out of resources",
    0xA900: "Data Set does not match SOP Class",
    0xC000: "Cannot understand",
    0xC122: "Transfer Syntax not supported",
}
"""Failure Reason (0008,1197) values: PS3.18 Annex I.2.2 Table I.2-2, and the C-STORE
statuses of PS3.4 Annex B.2.3 and PS3.7 Annex C that servers answer as well."""

FAILURE_RANGES: Sequence[tuple[int, int, str]] = (
    (0xA700, 0xA7FF, "Out of resources"),
    (0xA900, 0xA9FF, "Data Set does not match SOP Class"),
    (0xC000, 0xCFFF, "Cannot understand"),
)
"""Code ranges PS3.4 Table B.2-1 gives one meaning (the last two digits are the server's)."""

WARNING_REASONS: Mapping[int, str] = {
    0xB000: "Coercion of data elements",
    0xB006: "Elements discarded",
    0xB007: "Data Set does not match SOP Class",
}
"""Warning Reason (0008,1196) values, PS3.18 Annex I.2.1 Table I.2-1."""

DUPLICATE_SOP_INSTANCE = 0x0111

_WARNING_VALUE = re.compile(r'\s*(\d{3})\s+(\S+)\s+"((?:[^"\\]|\\.)*)"')
_PART_NOTE = re.compile(r"part (\d+) (failed|stored with warning): (.*)", re.DOTALL)


def describe_reason(code: int | None) -> str:
    """``C000H Cannot understand``-style text for a Failure or Warning Reason."""
    if code is None:
        return "no reason given"
    name = FAILURE_REASONS.get(code) or WARNING_REASONS.get(code)
    if name is None:
        name = next((text for low, high, text in FAILURE_RANGES if low <= code <= high), None)
    return f"{code:04X}H {name}" if name else f"{code:04X}H"


@dataclass(frozen=True)
class InstanceReference:
    """One item of the Referenced or Failed SOP Sequence."""

    sop_instance_uid: str | None
    reason: int | None
    """Failure Reason of a failed item, Warning Reason (if any) of a referenced one."""


@dataclass(frozen=True)
class StoreResponse:
    status: int
    referenced: tuple[InstanceReference, ...] = ()
    failed: tuple[InstanceReference, ...] = ()
    warnings: tuple[str, ...] = ()
    """Texts of the ``Warning`` headers (RFC 9111 §5.5; PS3.18 §8.6.3)."""
    error: str | None = None
    """Why the whole request failed (non-2xx without a Store Instances Response)."""

    @property
    def plain_success(self) -> bool:
        """Every instance stored without warning: no file needs a closer look."""
        return (
            self.error is None
            and not self.failed
            and all(item.reason is None for item in self.referenced)
        )


def parse_warning_header(value: str) -> str:
    """The text of a ``Warning: 299 agent "text"`` value, or the value itself."""
    match = _WARNING_VALUE.match(value)
    return re.sub(r"\\(.)", r"\1", match.group(3)) if match else value.strip()


def parse_store_response(
    status: int, body: bytes, content_type: str | None, warnings: Sequence[str] = ()
) -> StoreResponse:
    """The outcome of a STOW-RS request from its status, body and ``Warning`` headers.

    200, 202 and 409 carry a Store Instances Response (PS3.18 §10.5.3 Table 10.5.3-1); any
    other status fails the whole request. A body that is not DICOM JSON is tolerated: some
    servers answer XML (we ask for JSON) or nothing at all.
    """
    texts = tuple(parse_warning_header(w) for w in warnings)
    document = _json_object(body, content_type)
    if status not in (200, 202, 409) or (status == 409 and document is None):
        return StoreResponse(status, warnings=texts, error=error_text(status, body))
    if document is None:
        return StoreResponse(status, warnings=texts)
    return StoreResponse(
        status,
        referenced=_references(document.get(REFERENCED_SOP_SEQUENCE), WARNING_REASON),
        failed=_references(document.get(FAILED_SOP_SEQUENCE), FAILURE_REASON),
        warnings=texts,
    )


def _json_object(body: bytes, content_type: str | None) -> dict[str, Any] | None:
    if not body.strip() or "xml" in (content_type or "").lower():
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return None
    if isinstance(document, list) and len(document) == 1:
        document = document[0]
    return document if isinstance(document, dict) else None


def error_text(status: int, body: bytes) -> str:
    """``HTTP 400: reason`` for a failed request, the reason taken from a JSON error body
    (``reason``, ``detail``, ``message`` or ``title``) or from a short plain-text one."""
    document = _json_object(body, None)
    reason = None
    if document is not None:
        reason = next(
            (str(document[k]) for k in ("reason", "detail", "message", "title") if k in document),
            None,
        )
    elif body.strip() and not body.lstrip().startswith(b"<"):
        reason = " ".join(body.decode("utf-8", "replace").split())[:200]
    return f"HTTP {status}" + (f": {reason}" if reason else "")


def _references(attribute: Any, reason_tag: str) -> tuple[InstanceReference, ...]:
    items = attribute.get("Value", []) if isinstance(attribute, dict) else []
    if not isinstance(items, list):
        return ()
    return tuple(
        InstanceReference(
            _uid(item),
            _code(item, reason_tag),
        )
        for item in items
        if isinstance(item, dict)
    )


def _first_value(item: Mapping[str, Any], tag: str) -> Any:
    attribute = item.get(tag)
    values = attribute.get("Value") if isinstance(attribute, dict) else None
    return values[0] if isinstance(values, list) and values else None


def _uid(item: Mapping[str, Any]) -> str | None:
    value = _first_value(item, REFERENCED_SOP_INSTANCE_UID)
    return value.strip() if isinstance(value, str) and value.strip() else None


def _code(item: Mapping[str, Any], tag: str) -> int | None:
    """A US reason code; servers sometimes send it as a decimal string."""
    value = _first_value(item, tag)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# --- one outcome per file ----------------------------------------------------------------------


class Outcome(Enum):
    STORED = "stored"
    WARNING = "stored with warning"
    DUPLICATE = "duplicate"
    FAILED = "failed"


@dataclass(frozen=True)
class FileOutcome:
    outcome: Outcome
    code: int | None = None
    detail: str = ""

    @property
    def reason(self) -> str:
        """What to group this outcome by in a summary."""
        if self.code is None:
            return self.detail or "no reason given"
        return describe_reason(self.code)


STORED = FileOutcome(Outcome.STORED)

Pool = dict[str | None, list[InstanceReference]]
"""Unused items of one sequence by SOP Instance UID (None: a UID no part has)."""


def attribute(sop_uids: Sequence[str | None], response: StoreResponse) -> list[FileOutcome]:
    """One outcome per part sent, in order; ``sop_uids`` are the parts' SOP Instance UIDs
    (None where the file's could not be read).

    Each item of the answer is used once. Items are matched by UID first (when one UID was
    sent twice and has both a failed and a referenced item, a ``Warning`` that numbers the
    part decides, else the order); parts left over take the items left over in order (a
    server cannot name the UID of a file it could not parse). Parts the answer does not
    mention are stored after a 200 and failed otherwise.
    """
    if response.error is not None:
        return [FileOutcome(Outcome.FAILED, None, response.error)] * len(sop_uids)
    notes = _part_notes(response.warnings)
    sent = {uid for uid in sop_uids if uid is not None}
    failed: Pool = {}
    referenced: Pool = {}
    for items, by_uid in ((response.failed, failed), (response.referenced, referenced)):
        for item in items:
            key = item.sop_instance_uid if item.sop_instance_uid in sent else None
            by_uid.setdefault(key, []).append(item)
    outcomes: list[FileOutcome] = []
    for index, uid in enumerate(sop_uids):
        said_failed, note = notes.get(index + 1, (None, ""))
        outcome = _take(failed, referenced, uid, said_failed, note)
        if outcome is None and response.status == 200:
            outcome = STORED
        elif outcome is None:
            outcome = FileOutcome(Outcome.FAILED, None, note or "not in the response")
        outcomes.append(outcome)
    return outcomes


def _take(
    failed: Pool, referenced: Pool, uid: str | None, said_failed: bool | None, note: str
) -> FileOutcome | None:
    """The next unused item for one part: one with its UID, else one whose UID matches no
    part. A numbered ``Warning`` says which sequence to look in first; without one, a known
    UID is looked for among the stored first, an unknown one among the failed."""
    for key in (uid, None) if uid is not None else (None,):
        failure_first = said_failed if said_failed is not None else key is None
        order = [(failed, _failure), (referenced, _stored)]
        if not failure_first:
            order.reverse()
        for pool, make in order:
            if pool.get(key):
                return make(pool[key].pop(0), note)
    return None


def _failure(item: InstanceReference, note: str) -> FileOutcome:
    kind = Outcome.DUPLICATE if item.reason == DUPLICATE_SOP_INSTANCE else Outcome.FAILED
    return FileOutcome(kind, item.reason, note)


def _stored(item: InstanceReference, note: str) -> FileOutcome:
    if item.reason is None:
        return STORED
    return FileOutcome(Outcome.WARNING, item.reason, note)


def _part_notes(warnings: Sequence[str]) -> dict[int, tuple[bool, str]]:
    """Per-part (failed?, text) from ``Warning`` headers that number the parts ("part 3
    failed: …", as Tessera writes them); other servers' warnings are only shown in the
    summary."""
    notes: dict[int, tuple[bool, str]] = {}
    for text in warnings:
        match = _PART_NOTE.fullmatch(text.strip())
        if match:
            notes[int(match.group(1))] = (match.group(2) == "failed", match.group(3).strip())
    return notes
