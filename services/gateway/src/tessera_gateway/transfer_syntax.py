"""Transfer syntaxes, their media types, and WADO-RS negotiation (PS3.18 §8.7.3).

Pure: the table of transfer syntaxes the gateway knows (PS3.18 Table 8.7.3-5, "Transfer
Syntax UID for bulk data media types"), how an ``Accept`` header becomes an ordered list of
wishes, and how a wish becomes a plan for one stored instance: send the stored bytes, or ask
the codec service for another syntax. The I/O modules try the plans in order and take the
first that works, so a transcode that fails for one instance (16-bit pixels asked for as
JPEG Baseline) falls through to the client's next acceptable choice.

Plans follow the ``q`` of the client's items; among items of equal ``q`` the client has no
preference (RFC 9110 §12.5.1: only ``q`` ranks), and the stored bytes come first when an
item accepts them exactly. dicom-microscopy-viewer, for one, asks for every tile with
``image/jls``, ``image/jp2``, ``image/jpx``, ``application/octet-stream; transfer-syntax=*``
and ``image/jpeg`` at equal weight: a JPEG tile is then sent as stored, not re-encoded as
JPEG-LS (slower, larger, and colour-converted, docs/OHIF.md).

Default transfer syntaxes (PS3.18 §8.7.3.5.2): ``application/dicom`` without a
``transfer-syntax`` parameter means Explicit VR Little Endian; each bulk media type has its
own default (``image/jpeg`` → JPEG Baseline, ``image/jls`` → JPEG-LS Lossless, …); ``*`` means
any syntax, and Tessera then sends what it stored. One leniency, documented in
docs/CONFORMANCE.md: an instance that cannot be decoded at all (MPEG/H.264/HEVC video) is sent
as stored when the client only relied on the default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from .negotiation import AcceptItem

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
ANY = "*"

OCTET_STREAM = "application/octet-stream"
DICOM = "application/dicom"
ZIP = "application/zip"


@dataclass(frozen=True, slots=True)
class TransferSyntax:
    uid: str
    name: str
    #: The media type of its frames and bulk data (PS3.18 Table 8.7.3-5).
    media_type: str
    encapsulated: bool
    lossy: bool = False
    video: bool = False


def _ts(
    uid: str,
    name: str,
    media_type: str,
    *,
    encapsulated: bool = True,
    lossy: bool = False,
    video: bool = False,
) -> TransferSyntax:
    return TransferSyntax(uid, name, media_type, encapsulated, lossy, video)


_VIDEO = [
    ("1.2.840.10008.1.2.4.100", "MPEG2 Main Profile / Main Level", "video/mpeg2"),
    ("1.2.840.10008.1.2.4.100.1", "Fragmentable MPEG2 MP@ML", "video/mpeg2"),
    ("1.2.840.10008.1.2.4.101", "MPEG2 Main Profile / High Level", "video/mpeg2"),
    ("1.2.840.10008.1.2.4.101.1", "Fragmentable MPEG2 MP@HL", "video/mpeg2"),
    ("1.2.840.10008.1.2.4.102", "MPEG-4 AVC/H.264 High Profile / Level 4.1", "video/mp4"),
    ("1.2.840.10008.1.2.4.102.1", "Fragmentable MPEG-4 AVC/H.264 HP@4.1", "video/mp4"),
    ("1.2.840.10008.1.2.4.103", "MPEG-4 AVC/H.264 BD-compatible", "video/mp4"),
    ("1.2.840.10008.1.2.4.103.1", "Fragmentable MPEG-4 AVC/H.264 BD", "video/mp4"),
    ("1.2.840.10008.1.2.4.104", "MPEG-4 AVC/H.264 High Profile For 2D Video", "video/mp4"),
    ("1.2.840.10008.1.2.4.104.1", "Fragmentable MPEG-4 AVC/H.264 2D", "video/mp4"),
    ("1.2.840.10008.1.2.4.105", "MPEG-4 AVC/H.264 High Profile For 3D Video", "video/mp4"),
    ("1.2.840.10008.1.2.4.105.1", "Fragmentable MPEG-4 AVC/H.264 3D", "video/mp4"),
    ("1.2.840.10008.1.2.4.106", "MPEG-4 AVC/H.264 Stereo High Profile", "video/mp4"),
    ("1.2.840.10008.1.2.4.106.1", "Fragmentable MPEG-4 AVC/H.264 Stereo", "video/mp4"),
    ("1.2.840.10008.1.2.4.107", "HEVC/H.265 Main Profile / Level 5.1", "video/H265"),
    ("1.2.840.10008.1.2.4.108", "HEVC/H.265 Main 10 Profile / Level 5.1", "video/H265"),
]

TRANSFER_SYNTAXES: dict[str, TransferSyntax] = {
    ts.uid: ts
    for ts in (
        _ts(
            IMPLICIT_VR_LITTLE_ENDIAN, "Implicit VR Little Endian", OCTET_STREAM, encapsulated=False
        ),
        _ts(
            EXPLICIT_VR_LITTLE_ENDIAN, "Explicit VR Little Endian", OCTET_STREAM, encapsulated=False
        ),
        _ts(
            DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
            "Deflated Explicit VR Little Endian",
            OCTET_STREAM,
            encapsulated=False,
        ),
        _ts(EXPLICIT_VR_BIG_ENDIAN, "Explicit VR Big Endian", OCTET_STREAM, encapsulated=False),
        _ts("1.2.840.10008.1.2.4.50", "JPEG Baseline (Process 1)", "image/jpeg", lossy=True),
        _ts("1.2.840.10008.1.2.4.51", "JPEG Extended (Process 2 & 4)", "image/jpeg", lossy=True),
        _ts("1.2.840.10008.1.2.4.55", "JPEG Full Progression (retired)", "image/jpeg", lossy=True),
        _ts("1.2.840.10008.1.2.4.57", "JPEG Lossless (Process 14)", "image/jpeg"),
        _ts("1.2.840.10008.1.2.4.70", "JPEG Lossless SV1", "image/jpeg"),
        _ts("1.2.840.10008.1.2.4.80", "JPEG-LS Lossless", "image/jls"),
        _ts("1.2.840.10008.1.2.4.81", "JPEG-LS Near-Lossless", "image/jls", lossy=True),
        _ts("1.2.840.10008.1.2.4.90", "JPEG 2000 (Lossless Only)", "image/jp2"),
        _ts("1.2.840.10008.1.2.4.91", "JPEG 2000", "image/jp2", lossy=True),
        _ts("1.2.840.10008.1.2.4.92", "JPEG 2000 Part 2 (Lossless Only)", "image/jpx"),
        _ts("1.2.840.10008.1.2.4.93", "JPEG 2000 Part 2", "image/jpx", lossy=True),
        _ts("1.2.840.10008.1.2.4.201", "HTJ2K (Lossless Only)", "image/jphc"),
        _ts("1.2.840.10008.1.2.4.202", "HTJ2K with RPCL Options (Lossless Only)", "image/jphc"),
        _ts("1.2.840.10008.1.2.4.203", "HTJ2K", "image/jphc", lossy=True),
        _ts("1.2.840.10008.1.2.5", "RLE Lossless", "image/dicom-rle"),
        *(_ts(u, n, m, lossy=True, video=True) for u, n, m in _VIDEO),
    )
}

#: The default transfer syntax of each bulk media type (PS3.18 Table 8.7.3-5).
MEDIA_TYPE_DEFAULTS: dict[str, str] = {
    OCTET_STREAM: EXPLICIT_VR_LITTLE_ENDIAN,
    "image/jpeg": "1.2.840.10008.1.2.4.50",
    "image/jls": "1.2.840.10008.1.2.4.80",
    "image/jp2": "1.2.840.10008.1.2.4.90",
    "image/jpx": "1.2.840.10008.1.2.4.92",
    "image/jphc": "1.2.840.10008.1.2.4.201",
    "image/dicom-rle": "1.2.840.10008.1.2.5",
    "video/mpeg2": "1.2.840.10008.1.2.4.100",
    "video/mp4": "1.2.840.10008.1.2.4.102",
    "video/h265": "1.2.840.10008.1.2.4.107",
}

#: Other spellings clients use (PS3.18 lists the ``x-`` forms as previously used).
MEDIA_TYPE_ALIASES = {
    "image/x-dicom-rle": "image/dicom-rle",
    "image/x-jls": "image/jls",
    "video/mpeg": "video/mpeg2",
}

#: What to offer for ``image/*`` when the stored syntax is not an image format, best first:
#: lossless formats, then JPEG Baseline.
_IMAGE_PREFERENCE = ("image/jls", "image/jp2", "image/jphc", "image/dicom-rle", "image/jpeg")


def media_type_of(transfer_syntax_uid: str) -> str:
    ts = TRANSFER_SYNTAXES.get(transfer_syntax_uid)
    return ts.media_type if ts else OCTET_STREAM


def is_video(transfer_syntax_uid: str) -> bool:
    ts = TRANSFER_SYNTAXES.get(transfer_syntax_uid)
    return ts is not None and ts.video


def is_encapsulated(transfer_syntax_uid: str) -> bool:
    ts = TRANSFER_SYNTAXES.get(transfer_syntax_uid)
    return ts is not None and ts.encapsulated


def frames_label(transfer_syntax_uid: str) -> str:
    """The syntax stored frames are labelled with: Implicit VR Little Endian pixel data is
    byte for byte Explicit VR Little Endian pixel data (PS3.5 §8.1.1)."""
    if transfer_syntax_uid == IMPLICIT_VR_LITTLE_ENDIAN:
        return EXPLICIT_VR_LITTLE_ENDIAN
    return transfer_syntax_uid


def _normal(media_type: str) -> str:
    media_type = media_type.lower()
    return MEDIA_TYPE_ALIASES.get(media_type, media_type)


class Kind(Enum):
    DICOM = "dicom"
    BULK = "bulk"
    ZIP = "zip"


@dataclass(frozen=True, slots=True)
class Wish:
    """One acceptable representation: a media range and the ``transfer-syntax`` asked for
    (None: the media type's default; ``*``: any). ``multipart`` is False for a single-part
    ``Accept`` item (``image/jpeg`` rather than ``multipart/related; type="image/jpeg"``)."""

    kind: Kind
    media_range: str
    transfer_syntax: str | None
    multipart: bool = True
    q: float = 1.0


STORED = "stored"
"""A plan that sends the stored bytes."""


@dataclass(frozen=True, slots=True)
class Plan:
    """How to produce one instance (or its frames): the stored bytes (``target`` STORED) or a
    transcode to ``target``; ``label`` is the transfer syntax the client is told, and
    ``media_type`` the part's media type (bulk data and frames)."""

    target: str
    label: str
    media_type: str = DICOM
    multipart: bool = True

    @property
    def stored(self) -> bool:
        return self.target == STORED


class NotAcceptableError(ValueError):
    """Nothing the client accepts can be produced; ``str()`` says what could be."""


def wishes(accept: Sequence[AcceptItem], *, bulk_only: bool = False) -> list[Wish]:
    """The acceptable representations of an ``Accept`` header, best first.

    Instance resources (PS3.18 §10.4.1.1) offer ``multipart/related`` with
    ``type="application/dicom"`` (the default part type) or a bulk media type, and
    ``application/zip``. ``bulk_only`` is for frames, bulk data and pixel data, whose parts are
    bulk media types, multipart or single.
    """
    found: list[Wish] = []
    for item in accept:
        if not item.acceptable:
            continue
        media = item.media_type
        ts = media.params.get("transfer-syntax")
        if media.essence == "multipart/related" or (
            media.type in ("*", "multipart") and media.subtype == "*"
        ):
            default = "*/*" if bulk_only else DICOM
            part = _normal(media.params.get("type", default))
            if part == DICOM and not bulk_only:
                found.append(Wish(Kind.DICOM, DICOM, ts, q=item.q))
            elif _is_bulk_range(part):
                found.append(Wish(Kind.BULK, part, ts, q=item.q))
            if media.type == "*" and not bulk_only:
                found.append(Wish(Kind.ZIP, ZIP, ts, q=item.q))
            continue
        essence = _normal(media.essence)
        if not bulk_only and item.matches("application", "zip"):
            found.append(Wish(Kind.ZIP, ZIP, ts, q=item.q))
        elif bulk_only and _is_bulk_range(essence):
            found.append(Wish(Kind.BULK, essence, ts, multipart=False, q=item.q))
    return found


def _is_bulk_range(media_range: str) -> bool:
    if media_range in ("*/*", "image/*", "video/*", "application/*"):
        return True
    return media_range in MEDIA_TYPE_DEFAULTS or media_range == "application/pdf"


def _covers(media_range: str, media_type: str) -> bool:
    if media_range == "*/*":
        return True
    top, _, sub = media_range.partition("/")
    if sub == "*":
        return media_type.split("/")[0] == top
    return _normal(media_type) == media_range


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What the codec service can decode and encode (``CodecCapabilities``); None when the
    service has not answered (then a transcode is still tried, and fails with 503)."""

    decode: frozenset[str] | None
    encode: frozenset[str] | None

    def can(self, source: str, target: str) -> bool:
        if self.decode is None or self.encode is None:
            return True
        return source in self.decode and target in self.encode


def instance_plans(wishes_: Sequence[Wish], stored: str, capabilities: Capabilities) -> list[Plan]:
    """Plans for one instance as a PS3.10 file (``application/dicom`` parts or ZIP entries)."""
    plans = _Ranked()
    for wish in wishes_:
        wanted = wish.transfer_syntax
        if wanted in (ANY, stored) or (wanted is None and stored == EXPLICIT_VR_LITTLE_ENDIAN):
            plans.add(wish, Plan(STORED, stored), exact=True)
        elif wanted is None:
            # PS3.18 §8.7.3.5.2: the default is Explicit VR Little Endian; an instance that
            # cannot be decoded (video) is sent as stored rather than not at all.
            if capabilities.can(stored, EXPLICIT_VR_LITTLE_ENDIAN):
                plans.add(wish, Plan(EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN))
            if not capabilities.decode or stored not in capabilities.decode:
                plans.add(wish, Plan(STORED, stored))
        elif wanted in TRANSFER_SYNTAXES and capabilities.can(stored, wanted):
            plans.add(wish, Plan(wanted, wanted))
    return plans.best_first()


def bulk_plans(
    wishes_: Sequence[Wish],
    stored: str,
    capabilities: Capabilities,
    *,
    stored_servable: bool,
) -> list[Plan]:
    """Plans for frames or pixel data of one instance.

    ``stored_servable`` says whether the stored bytes can be served as frames by byte range
    (a frame index exists and the object is not deflated).
    """
    plans = _Ranked()
    for wish in wishes_:
        if wish.kind is not Kind.BULK:
            continue
        bulk = _BulkWish(wish, stored, capabilities, stored_servable)
        wanted = wish.transfer_syntax
        if wanted == ANY:
            plans.add(wish, bulk.as_stored(), exact=True)
            for target in _defaults(wish.media_range):
                plans.add(wish, bulk.transcode(target))
        elif wanted is None:
            default = MEDIA_TYPE_DEFAULTS.get(wish.media_range)
            if default is None:  # a wildcard: the server chooses, and sends what it has
                plans.add(wish, bulk.as_stored(), exact=True)
                for target in _defaults(wish.media_range):
                    plans.add(wish, bulk.transcode(target))
            elif default == frames_label(stored):
                plans.add(wish, bulk.as_stored(), exact=True)
            else:
                plans.add(wish, bulk.transcode(default))
                plans.add(wish, bulk.as_stored())  # same media type, another syntax of it
        elif wanted == frames_label(stored):
            plans.add(wish, bulk.as_stored(), exact=True)
        else:
            plans.add(wish, bulk.transcode(wanted))
    return plans.best_first()


def _defaults(media_range: str) -> list[str]:
    """Syntaxes to transcode to for a media range that names no syntax, best first."""
    if media_range in MEDIA_TYPE_DEFAULTS:
        return [MEDIA_TYPE_DEFAULTS[media_range]]
    if media_range in ("*/*", "application/*"):
        return [EXPLICIT_VR_LITTLE_ENDIAN]
    if media_range == "image/*":
        return [MEDIA_TYPE_DEFAULTS[media] for media in _IMAGE_PREFERENCE]
    return []


@dataclass(frozen=True, slots=True)
class _BulkWish:
    wish: Wish
    stored: str
    capabilities: Capabilities
    stored_servable: bool

    def as_stored(self) -> Plan | None:
        media = media_type_of(self.stored)
        if self.stored_servable and _covers(self.wish.media_range, media):
            return Plan(STORED, frames_label(self.stored), media, self.wish.multipart)
        return None

    def transcode(self, target: str) -> Plan | None:
        ts = TRANSFER_SYNTAXES.get(target)
        if (
            ts is None
            or ts.video
            or (self.stored_servable and target == frames_label(self.stored))
            or not _covers(self.wish.media_range, ts.media_type)
            or not self.capabilities.can(self.stored, target)
        ):
            return None
        return Plan(target, target, ts.media_type, self.wish.multipart)


@dataclass(slots=True)
class _Ranked:
    """Plans with the weight of the wish they answer. ``exact`` marks the stored bytes when
    they are what the wish asks for (not a fallback to another syntax of its media type)."""

    entries: list[tuple[float, bool, Plan]] = field(default_factory=list)

    def add(self, wish: Wish, plan: Plan | None, *, exact: bool = False) -> None:
        if plan is not None:
            self.entries.append((wish.q, exact, plan))

    def best_first(self) -> list[Plan]:
        """By ``q``; among equal ``q`` the exact stored plans first, else the client's order
        (a stable sort)."""
        ranked = sorted(self.entries, key=lambda entry: (-entry[0], not entry[1]))
        return _unique([plan for _, _, plan in ranked])


def _unique(plans: list[Plan]) -> list[Plan]:
    seen: set[Plan] = set()
    result = []
    for plan in plans:
        if plan not in seen:
            seen.add(plan)
            result.append(plan)
    return result
