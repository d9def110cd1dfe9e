"""DICOM Unique Identifiers (PS3.5 §9.1).

A UID is dot-separated numeric components, at most 64 characters. Every UID that arrives from
outside is checked here before it reaches an object key, a query, a path or a log line
(ARCHITECTURE invariant 9).
"""

from __future__ import annotations

import re
import uuid

UID_MAX_LENGTH = 64
_UID_PATTERN = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_LENIENT_PATTERN = re.compile(r"[0-9]+(\.[0-9]+)*")


class InvalidUIDError(ValueError):
    """Raised when a string is not a usable DICOM UID."""


def is_valid_uid(value: str, *, strict: bool = False) -> bool:
    """Return True when ``value`` is a UID we can use as a key.

    PS3.5 §9.1 forbids leading zeros in a component; real devices break that rule often, so by
    default only the character set and the length are enforced (what matters for safety).
    ``strict=True`` also rejects leading zeros.
    """
    if not value or len(value) > UID_MAX_LENGTH:
        return False
    pattern = _UID_PATTERN if strict else _LENIENT_PATTERN
    return pattern.fullmatch(value) is not None


def validate_uid(value: str, *, what: str = "UID") -> str:
    """Return ``value`` unchanged when valid, else raise ``InvalidUIDError`` naming ``what``."""
    if not is_valid_uid(value):
        shown = value if len(value) <= 80 and value.isprintable() else repr(value[:80])
        raise InvalidUIDError(
            f"{what} {shown!r} is not a valid DICOM UID "
            f"(digits and dots, no empty component, at most {UID_MAX_LENGTH} characters)"
        )
    return value


def generate_uid() -> str:
    """A new UID under the ``2.25`` root (PS3.5 Annex B.2: UUID-derived UIDs)."""
    return f"2.25.{uuid.uuid4().int}"
