"""The bus contract: one typed model per NATS subject, versioned subjects.

Subjects are ``tessera.v1.<service>.<verb>`` for request/reply (served in a queue group named
after the service) and ``tessera.v1.events.<noun>.<verb>`` for durable JetStream events.
Messages carry references to objects in the blob store, never pixel data, and stay far below
the 1 MiB NATS limit (ARCHITECTURE invariant 6).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .rendering import RenderParams


class Subject(StrEnum):
    STORE_INGEST = "tessera.v1.store.ingest"
    STORE_INGEST_BATCH = "tessera.v1.store.ingest_batch"
    STORE_PING = "tessera.v1.store.ping"
    STORE_DELETE = "tessera.v1.store.delete"
    STORE_ASSEMBLE = "tessera.v1.store.assemble"
    QUERY_INDEX = "tessera.v1.query.index"
    QUERY_INDEX_BATCH = "tessera.v1.query.index_batch"
    QUERY_SEARCH = "tessera.v1.query.search"
    QUERY_LOCATE = "tessera.v1.query.locate"
    QUERY_METADATA = "tessera.v1.query.metadata"
    QUERY_CONTENTS = "tessera.v1.query.contents"
    QUERY_PING = "tessera.v1.query.ping"
    QUERY_DELETE = "tessera.v1.query.delete"
    EVENT_INSTANCE_STORED = "tessera.v1.events.instance.stored"
    EVENT_INSTANCE_DELETED = "tessera.v1.events.instance.deleted"


EVENTS_STREAM = "TESSERA_EVENTS"
EVENTS_SUBJECTS = ("tessera.v1.events.>",)

#: Replies are cut into pages well below the NATS payload limit; the gateway asks for more.
PAGE_BYTES = 512 * 1024
#: Instance records larger than this travel by reference (their sidecar object) instead.
INLINE_RECORD_BYTES = 256 * 1024


class Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Ping(Message):
    pass


class Pong(Message):
    service: str
    ready: bool
    detail: str = ""


class IngestRequest(Message):
    """Claim check for one STOW part the gateway has streamed into the blob store."""

    upload_key: str
    size: int
    sha256: str
    expected_study_uid: str | None = None


#: Parts in one ``store.ingest_batch`` request. A claim check is ~250 bytes and an outcome at
#: most ~2 KiB, so request and reply stay far below ``PAGE_BYTES`` (invariant 6).
MAX_INGEST_BATCH = 64


class IngestBatchRequest(Message):
    """Claim checks for several parts of one STOW request, ingested together: the store
    analyses them concurrently, publishes their events concurrently and indexes them with one
    ``query.index_batch`` request, and answers once every one is durable and indexed (or
    failed). A SOP Instance UID may appear more than once (one after the other, in order)."""

    parts: list[IngestRequest] = Field(min_length=1, max_length=MAX_INGEST_BATCH)


class IngestBatchReply(Message):
    """One outcome per part of the request, in its order: one bad part never fails another."""

    outcomes: list[InstanceOutcome]


class BulkPart(Message):
    """One bulk data part of a STOW metadata + bulk data request (PS3.18 §10.5.1.2), streamed
    into the blob store at ``key``. ``content_location`` is the part's Content-Location, which
    BulkDataURIs of the metadata name; ``transfer_syntax`` is the media type's parameter."""

    key: str
    content_location: str
    media_type: str
    transfer_syntax: str | None = None
    size: int


class AssembleRequest(Message):
    """Claim check for one metadata part (DICOM JSON or PS3.19 XML) and the request's bulk
    data parts, listed in the manifest object at ``manifest_key`` (a JSON array of
    ``BulkPart``) so that the message stays small whatever the number of parts. The store builds
    a PS3.10 object per dataset and ingests it as if it had been uploaded."""

    metadata_key: str
    metadata_size: int
    metadata_type: Literal["application/dicom+json", "application/dicom+xml"]
    manifest_key: str | None = None
    expected_study_uid: str | None = None


class AssembleReply(Message):
    """One outcome per dataset of the metadata part (at most ``MAX_ASSEMBLE_DATASETS``), and
    the indexes (into the manifest) of the bulk data parts those datasets referenced."""

    outcomes: list[InstanceOutcome]
    referenced: list[int] = Field(default_factory=list)


#: Datasets in one metadata part; a longer JSON array is refused, so that an ``AssembleReply``
#: (up to ~1 KiB per outcome) stays well below the 1 MiB NATS limit.
MAX_ASSEMBLE_DATASETS = 500


class InstanceOutcome(Message):
    """The per-instance result of a STOW part (PS3.18 Annex I). UIDs are present only when
    they were readable and valid."""

    stored: bool
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    failure_reason: int | None = None
    warning_reason: int | None = None
    reason: str = ""
    #: Items of Original Attributes Sequence (0400,0561) in DICOM JSON when values were coerced.
    original_attributes: list[dict[str, Any]] | None = None


class FrameIndex(Message):
    """Where each frame's bytes lie inside the stored PS3.10 object.

    Native pixel data: frame ``i`` is ``frame_length`` bytes at ``data_offset + i*frame_length``
    (``frame_length`` is None for bit-packed data, BitsAllocated 1). Encapsulated pixel data
    (PS3.5 §A.4): ``fragments`` holds the (offset, length) of every fragment's value and
    ``frames[i]`` is (first fragment, fragment count) of frame ``i``; ``frames`` is empty when
    the mapping could not be determined without decoding.
    """

    encapsulated: bool
    number_of_frames: int
    data_offset: int | None = None
    data_length: int | None = None
    frame_length: int | None = None
    fragments: list[tuple[int, int]] = Field(default_factory=list)
    frames: list[tuple[int, int]] = Field(default_factory=list)


class InstanceLocation(Message):
    """Where a stored instance lives and what it is: enough to retrieve it byte-exact."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    object_key: str
    sidecar_key: str
    size: int
    sha256: str


class InstanceRecord(InstanceLocation):
    """Everything the index needs about one stored instance.

    ``metadata`` is the instance's DICOM JSON (bulk values as BulkDataURIs relative to the
    service root, see ``tessera_common.dicom_json``); it may be left out when large, and is
    then read from the sidecar object at ``sidecar_key``.
    """

    stored_at: str
    frames: FrameIndex | None = None
    metadata: dict[str, Any] | None = None


class IndexRequest(Message):
    record: InstanceRecord


class IndexReply(Message):
    """``previous_object_key`` names the object a re-stored SOP Instance replaced when it moved
    to another study or series; the store deletes it."""

    indexed: bool
    replaced: bool = False
    previous_object_key: str | None = None
    previous_sidecar_key: str | None = None


#: Records in one ``query.index_batch`` request; its sender also keeps the serialized request
#: below ``PAGE_BYTES`` (records larger than ``INLINE_RECORD_BYTES`` travel by reference).
MAX_INDEX_BATCH = 64


class IndexBatchRequest(Message):
    """Index several instances in one transaction (same semantics as one ``IndexRequest``
    each, applied in order): all of them become visible together, or none."""

    records: list[InstanceRecord] = Field(min_length=1, max_length=MAX_INDEX_BATCH)


class IndexBatchReply(Message):
    """One ``IndexReply`` per record of the request, in its order."""

    replies: list[IndexReply]


class InstanceStoredEvent(Message):
    """Published on ``EVENT_INSTANCE_STORED`` once an instance's bytes and sidecar are durable."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    sidecar_key: str
    sha256: str
    stored_at: str

    @classmethod
    def of(cls, record: InstanceRecord) -> InstanceStoredEvent:
        """The event that announces ``record``."""
        return cls(
            study_uid=record.study_uid,
            series_uid=record.series_uid,
            sop_uid=record.sop_uid,
            sop_class_uid=record.sop_class_uid,
            sidecar_key=record.sidecar_key,
            sha256=record.sha256,
            stored_at=record.stored_at,
        )


class QueryLevel(StrEnum):
    STUDY = "study"
    SERIES = "series"
    INSTANCE = "instance"


class MatchTerm(Message):
    """One value of a matching key, parsed and normalized (``tessera_common.qido_values``).

    ``single``: ``text`` (strings; person names folded) or ``number`` must equal a stored value.
    ``wildcard``: ``text`` is a pattern where ``*`` and ``?`` are wildcards (PS3.4 §C.2.2.2.4).
    ``range``: a stored value lies in ``low`` … ``high`` (inclusive, either may be open,
    §C.2.2.2.5); when ``zoned``, values whose time zone is known are compared as UTC instants
    with ``utc_low`` … ``utc_high`` instead. ``fuzzy``: every one of ``tokens`` starts a word of
    the name (PS3.18 §8.3.4.2). ``groups``: every one of ``parts`` matches the person name
    component group (``A``lphabetic, ``I``deographic, ``P``honetic) it names.
    """

    kind: Literal["single", "wildcard", "range", "fuzzy", "groups"]
    text: str | None = None
    number: int | float | None = None
    low: str | None = None
    high: str | None = None
    zoned: bool = False
    utc_low: str | None = None
    utc_high: str | None = None
    tokens: list[str] = Field(default_factory=list)
    group: Literal["A", "I", "P"] | None = None
    parts: list[MatchTerm] = Field(default_factory=list)


class AttributeMatch(Message):
    """One matching key (PS3.4 C.2.2.2). ``tag`` is the 32-bit attribute tag.

    ``value`` is the key's text as given. A key matches when any of its ``terms`` does
    (Multiple Value Matching), or — with ``or_empty`` (``emptyvaluematching=true``) — when the
    attribute is empty or absent. ``uid_list`` matches ``value``'s UIDs (separated by ``\\``),
    ``empty`` matches only empty or absent attributes (the value ``""``), ``sequence`` matches
    when one item of the sequence matches all of ``items`` (§C.2.2.2.6), ``universal`` always.
    """

    tag: int
    value: str
    kind: Literal[
        "single",
        "uid_list",
        "universal",
        "wildcard",
        "range",
        "fuzzy",
        "multiple",
        "empty",
        "sequence",
    ] = "single"
    vr: str = ""
    terms: list[MatchTerm] = Field(default_factory=list)
    or_empty: bool = False
    items: list[AttributeMatch] = Field(default_factory=list)


class SearchRequest(Message):
    """A parsed QIDO-RS query (``tessera_common.qido.parse_search``). ``fuzzy``,
    ``empty_value_matching`` and ``timezone_offset`` (minutes) record the query parameters;
    their effect is already in the terms of ``matches``."""

    level: QueryLevel
    study_uid: str | None = None
    series_uid: str | None = None
    matches: list[AttributeMatch] = Field(default_factory=list)
    include_fields: list[int] = Field(default_factory=list)
    include_all: bool = False
    limit: int
    offset: int = 0
    fuzzy: bool = False
    empty_value_matching: bool = False
    timezone_offset: int | None = None


class SearchReply(Message):
    """A page of QIDO results (DICOM JSON datasets, Retrieve URLs relative to the root).

    ``next_offset`` is set when the page was cut for size and more of the requested window
    remains; ``more_available`` when matches exist beyond ``offset + limit``.
    """

    results: list[dict[str, Any]]
    next_offset: int | None = None
    more_available: bool = False


class LocateRequest(Message):
    study_uid: str
    series_uid: str | None = None
    sop_uid: str | None = None
    offset: int = 0
    limit: int = 1000


class LocatedInstance(InstanceLocation):
    """One instance of a ``LocateReply``."""


class LocateReply(Message):
    instances: list[LocatedInstance]
    next_offset: int | None = None


class ContentsReply(Message):
    """What the study, series or instance of a ``LocateRequest`` (its paging ignored) is made
    of: ``count`` instances, and ``digest`` (``contents_digest``) over them in retrieve order.
    Any stored, replaced or removed instance changes the digest."""

    count: int
    digest: str


def contents_digest(instances: Iterable[tuple[str, str]]) -> str:
    """Hex SHA-256 over ``"\n{sop_uid}:{sha256}"`` of each (SOP Instance UID, SHA-256 of the
    stored bytes) pair, in the order given."""
    h = hashlib.sha256()
    for sop_uid, sha256 in instances:
        h.update(f"\n{sop_uid}:{sha256}".encode())
    return h.hexdigest()


class MetadataRequest(Message):
    """Instance metadata of a study, series or instance, for WADO-RS ``/metadata``."""

    study_uid: str
    series_uid: str | None = None
    sop_uid: str | None = None
    offset: int = 0


class MetadataReply(Message):
    """Precomputed instance JSON documents (each one serialized DICOM JSON object), cut into
    pages below ``PAGE_BYTES``; ``next_offset`` asks for the rest. What an index returns."""

    documents: list[str]
    next_offset: int | None = None


class MetadataPage(Message):
    """The ``query.metadata`` reply, sent ``WithPayload``: the ``count`` documents of a
    ``MetadataReply`` are the payload, joined by commas (the inside of a JSON array), so they
    travel without being escaped into a JSON string and parsed back out of one."""

    count: int
    next_offset: int | None = None


# --- deletion: DELETE of a study, series or instance (docs/CONFORMANCE.md) ---------------------

#: The most instances one ``store.delete`` request names (keeps it far below ``PAGE_BYTES``).
MAX_DELETE_BATCH = 100


class DeleteRequest(Message):
    """Delete these located instances: their index entries, objects, sidecars and derived
    objects. The store rebuilds every key from the UIDs; it never deletes a key it was sent."""

    instances: list[InstanceLocation] = Field(max_length=MAX_DELETE_BATCH)


class DeleteReply(Message):
    """``deleted``: the SOP Instance UIDs that were indexed and are now removed."""

    deleted: list[str]


class IndexDeleteRequest(Message):
    """Remove these instances from the index, and the series and studies left empty."""

    sop_uids: list[str] = Field(max_length=MAX_DELETE_BATCH)


class IndexDeleteReply(Message):
    """The index entries removed (instances that were not indexed are left out)."""

    instances: list[LocatedInstance]


class InstanceDeletedEvent(Message):
    """Published on ``EVENT_INSTANCE_DELETED`` once an instance's index entry and objects are
    gone."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    sha256: str
    deleted_at: str


# --- codec service: transcoding for WADO-RS (PS3.18 §8.7.3.5) ---------------------------------


class CodecSubject(StrEnum):
    """Subjects of the codec service (queue group ``codec``)."""

    TRANSCODE = "tessera.v1.codec.transcode"
    CAPABILITIES = "tessera.v1.codec.capabilities"
    PING = "tessera.v1.codec.ping"
    #: Core NATS (not JetStream): a codec that starts announces its capabilities here.
    ANNOUNCE = "tessera.v1.codec.announce"


#: The most frames one transcode request may name (keeps the reply far below PAGE_BYTES).
MAX_TRANSCODE_FRAMES = 1000


class CodecCapabilities(Message):
    """Transfer syntax UIDs the codec service decodes and encodes; the gateway's
    negotiation offers a transcode only when the stored syntax is in ``decode`` and the
    wanted one in ``encode``."""

    decode: list[str]
    encode: list[str]


class TranscodeRequest(Message):
    """Transcode a stored instance (``frames`` None: the whole PS3.10 object) or some of its
    frames (1-based numbers) to ``target_transfer_syntax_uid``. Results are derived objects in
    the blob store, cached by (``sha256``, target)."""

    object_key: str
    sidecar_key: str
    sha256: str
    size: int
    transfer_syntax_uid: str
    target_transfer_syntax_uid: str
    frames: list[int] | None = None


class DerivedInstance(Message):
    """A transcoded PS3.10 object and where its frames lie (its sidecar in the blob store)."""

    object_key: str
    size: int
    transfer_syntax_uid: str
    source_sha256: str
    frames: FrameIndex | None = None


class FrameLocation(Message):
    """The bytes of frame ``number`` (1-based): ``length`` bytes at ``offset`` of ``key``."""

    number: int
    key: str
    offset: int
    length: int


class TranscodeReply(Message):
    transfer_syntax_uid: str
    instance: DerivedInstance | None = None
    frames: list[FrameLocation] = Field(default_factory=list)


# --- audit: one event per HTTP access (docs/SECURITY.md) ----------------------------------------

#: Audit events have their own subject space and stream: they are a compliance record with a
#: retention of their own, and nothing that replays ``tessera.v1.events.>`` should see them.
AUDIT_SUBJECT = "tessera.v1.audit.access"
AUDIT_STREAM = "TESSERA_AUDIT"
AUDIT_SUBJECTS = ("tessera.v1.audit.>",)


class AuditEvent(Message):
    """Who accessed which resource, and with what outcome (published on ``AUDIT_SUBJECT``).

    Modelled on the DICOM audit message's participants (PS3.15 §A.5: active participant,
    network access point, participant object): ``subject`` is the token's ``sub`` or
    ``apikey:<key id>``; the resource is the route *template* plus the path UIDs once
    validated. No PHI beyond UIDs (ARCHITECTURE invariant 10): never the query string (QIDO-RS
    carries patient names there), never a header, never a body.
    """

    event_id: str
    time: str
    service: str = "gateway"
    subject: str
    auth_method: Literal["jwt", "api-key", "none"]
    client_id: str | None = None
    action: Literal["read", "write", "delete", "admin"] | None = None
    method: str
    route: str
    study_uid: str | None = None
    series_uid: str | None = None
    sop_uid: str | None = None
    status: int
    outcome: Literal["success", "denied", "client-error", "server-error", "cancelled"]
    duration_ms: float
    source_address: str | None = None
    trace_id: str | None = None


# --- render service: rendered and thumbnail resources (PS3.18 §10.4) ------------------------


class RenderSubject(StrEnum):
    """Subjects of the render service (queue group ``render``)."""

    FRAME = "tessera.v1.render.frame"
    PING = "tessera.v1.render.ping"


#: Rendered images up to this size travel inline in the reply; larger ones by reference
#: (the cached object's key), keeping replies far below the NATS limit (invariant 6).
INLINE_RENDER_BYTES = 384 * 1024
#: The most frames one request may animate (image/gif of a multi-frame instance).
MAX_RENDER_FRAMES = 1000


class RenderRequest(Message):
    """Render ``frames`` (1-based) of one stored instance with ``params``: one frame for JPEG
    and PNG, one or more for an animated GIF. The render worker reads the pixels itself from
    the blob store; the result is cached by (``instance.sha256``, frames, params)."""

    instance: InstanceLocation
    frames: list[int] = Field(min_length=1, max_length=MAX_RENDER_FRAMES)
    params: RenderParams


class RenderReply(Message):
    """A rendered image: its bytes are the reply's payload (``bus.WithPayload``) when
    ``key`` is None, else the cached object at ``key`` holds them."""

    media_type: str
    size: int
    key: str | None = None
    cached: bool = False
