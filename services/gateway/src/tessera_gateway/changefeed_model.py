"""The change feed's model: its query parameters and its entries (docs/EVENTS.md).

Modelled on Microsoft's DICOM service change feed (v2): an entry per instance change, with the
fields ``Sequence``, ``StudyInstanceUid``, ``SeriesInstanceUid``, ``SopInstanceUid``,
``Action`` (``create`` / ``delete``), ``Timestamp``, ``State`` (``current`` / ``replaced`` /
``deleted``) and optionally ``Metadata``. The sequence is the JetStream stream sequence of the
event in ``TESSERA_EVENTS``, so it is unique, increasing and stable across gateway replicas.

Pure: no aiohttp, no NATS, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson
from pydantic import ValidationError

from tessera_common.messages import InstanceDeletedEvent, InstanceStoredEvent, Subject

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

PARAMETERS = ("starttime", "endtime", "offset", "limit", "includemetadata")
"""Query parameters of ``/changefeed``, compared case-insensitively (as Microsoft's are)."""
LATEST_PARAMETERS = ("includemetadata",)

_SPELLING = {
    "starttime": "startTime",
    "endtime": "endTime",
    "offset": "offset",
    "limit": "limit",
    "includemetadata": "includeMetadata",
}


class Action(StrEnum):
    CREATE = "create"
    DELETE = "delete"


class State(StrEnum):
    """What became of the instance version an entry describes."""

    CURRENT = "current"
    REPLACED = "replaced"
    DELETED = "deleted"


class ChangeFeedQueryError(ValueError):
    """A query parameter that cannot be used; the message says which and why (400)."""


@dataclass(frozen=True, slots=True)
class ChangeFeedQuery:
    """A parsed ``/changefeed`` request: entries with ``start_time <= Timestamp < end_time``
    and ``Sequence > offset``, at most ``limit`` of them, oldest first."""

    start_time: datetime | None = None
    end_time: datetime | None = None
    offset: int = 0
    limit: int = DEFAULT_LIMIT
    include_metadata: bool = True


def _single(params: Iterable[tuple[str, str]], known: tuple[str, ...]) -> dict[str, str]:
    values: dict[str, str] = {}
    for name, value in params:
        key = name.lower()
        if key not in known:
            raise ChangeFeedQueryError(
                f"unknown query parameter {name!r}; known: {', '.join(_SPELLING[k] for k in known)}"
            )
        if key in values:
            raise ChangeFeedQueryError(f"query parameter {_SPELLING[key]} is given more than once")
        values[key] = value
    return values


def parse_time(name: str, text: str) -> datetime:
    """An ISO 8601 date-time with a time zone (``2026-01-02T03:04:05Z``, ``…+01:00``), as UTC."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ChangeFeedQueryError(
            f"{name} {text[:64]!r} is not an ISO 8601 date-time (e.g. 2026-01-02T03:04:05Z)"
        ) from exc
    if value.tzinfo is None or value.utcoffset() is None:
        raise ChangeFeedQueryError(
            f"{name} {text[:64]!r} has no time zone; add Z or an offset such as +01:00"
        )
    return value.astimezone(UTC)


def _integer(name: str, text: str, low: int, high: int) -> int:
    if not text.isascii() or not text.isdigit():
        raise ChangeFeedQueryError(f"{name} {text[:32]!r} is not a non-negative integer")
    value = int(text)
    if not low <= value <= high:
        raise ChangeFeedQueryError(f"{name} {value} is out of range {low}..{high}")
    return value


def parse_bool(name: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered not in ("true", "false"):
        raise ChangeFeedQueryError(f"{name} {text[:32]!r} is neither true nor false")
    return lowered == "true"


def parse_query(params: Iterable[tuple[str, str]]) -> ChangeFeedQuery:
    """The ``/changefeed`` query string; ``ChangeFeedQueryError`` for anything unusable."""
    values = _single(params, PARAMETERS)
    start = parse_time("startTime", values["starttime"]) if "starttime" in values else None
    end = parse_time("endTime", values["endtime"]) if "endtime" in values else None
    if start is not None and end is not None and end <= start:
        raise ChangeFeedQueryError("endTime must be later than startTime")
    return ChangeFeedQuery(
        start_time=start,
        end_time=end,
        offset=_integer("offset", values["offset"], 0, 2**63 - 1) if "offset" in values else 0,
        limit=_integer("limit", values["limit"], 1, MAX_LIMIT)
        if "limit" in values
        else DEFAULT_LIMIT,
        include_metadata=parse_bool("includeMetadata", values["includemetadata"])
        if "includemetadata" in values
        else True,
    )


def parse_latest_query(params: Iterable[tuple[str, str]]) -> bool:
    """``includeMetadata`` of ``/changefeed/latest`` (default true)."""
    values = _single(params, LATEST_PARAMETERS)
    text = values.get("includemetadata")
    return True if text is None else parse_bool("includeMetadata", text)


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One instance event of the stream, with its stream sequence and stream timestamp.

    ``sidecar_key`` is set for ``create`` only: where the stored version's record lives.
    """

    sequence: int
    timestamp: datetime
    action: Action
    study_uid: str
    series_uid: str
    sop_uid: str
    sha256: str
    sidecar_key: str | None = None


def change_event(
    sequence: int, timestamp: datetime, subject: str, data: bytes
) -> ChangeEvent | None:
    """The change an event of ``TESSERA_EVENTS`` records, or None for a subject (or a payload)
    that is no instance change: the feed skips it rather than fail on a newer event type."""
    try:
        if subject == Subject.EVENT_INSTANCE_STORED:
            stored = InstanceStoredEvent.model_validate_json(data)
            return ChangeEvent(
                sequence,
                timestamp,
                Action.CREATE,
                stored.study_uid,
                stored.series_uid,
                stored.sop_uid,
                stored.sha256,
                stored.sidecar_key,
            )
        if subject == Subject.EVENT_INSTANCE_DELETED:
            deleted = InstanceDeletedEvent.model_validate_json(data)
            return ChangeEvent(
                sequence,
                timestamp,
                Action.DELETE,
                deleted.study_uid,
                deleted.series_uid,
                deleted.sop_uid,
                deleted.sha256,
            )
    except ValidationError:
        return None
    return None


def entry_state(event: ChangeEvent, stored_sha256: str | None) -> State:
    """The state of the version ``event`` describes, given the SHA-256 of what its sidecar
    holds now (None: no sidecar at the event's study and series).

    A delete is always ``deleted``. A create is ``current`` while the same bytes are stored,
    ``replaced`` once other bytes were stored under the SOP Instance UID, and ``deleted`` once
    nothing is stored there (deleted, or re-filed under another study or series).
    """
    if event.action is Action.DELETE or stored_sha256 is None:
        return State.DELETED
    return State.CURRENT if stored_sha256 == event.sha256 else State.REPLACED


def format_timestamp(value: datetime) -> str:
    """UTC, microseconds, ``Z``: ``2026-01-02T03:04:05.123456Z``."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry_document(
    event: ChangeEvent,
    state: State,
    *,
    include_metadata: bool = False,
    metadata: orjson.Fragment | None = None,
) -> dict[str, Any]:
    """The JSON object of one entry; ``Metadata`` (DICOM JSON, PS3.18 §F.2) only when asked
    for, and null unless the entry's version is the one stored now."""
    document: dict[str, Any] = {
        "Sequence": event.sequence,
        "StudyInstanceUid": event.study_uid,
        "SeriesInstanceUid": event.series_uid,
        "SopInstanceUid": event.sop_uid,
        "Action": event.action.value,
        "Timestamp": format_timestamp(event.timestamp),
        "State": state.value,
    }
    if include_metadata:
        document["Metadata"] = metadata
    return document
