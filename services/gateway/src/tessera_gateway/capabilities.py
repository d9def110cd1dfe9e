"""What Tessera's HTTP API offers, as one table: resources, methods, parameters, media types.

Pure: no aiohttp, no I/O. The table is the single source of three documents, so they cannot
disagree with one another:

- the PS3.18 Capabilities Description (Annex H; a WADL document, and its JSON equivalent),
  answered by the Retrieve Capabilities transaction (PS3.18 §8.9) at the service root
  (``wadl.py``);
- the OpenAPI 3.1 document at ``/openapi.json`` (``openapi.py``);
- docs/CONFORMANCE.md, which a unit test checks against the table.

A second unit test checks the table against the gateway's router (every route is described,
every supported method is routed), so the table stays true as routes are added. Rows another
engineer is still building are ``IN_PROGRESS``: described (and served once their route exists),
flipped to ``SUPPORTED`` when done.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

JsonSchema = dict[str, Any]
ParamStyle = Literal["query", "header", "template"]


class Support(StrEnum):
    SUPPORTED = "supported"
    IN_PROGRESS = "in progress"


@dataclass(frozen=True, slots=True)
class Param:
    """A request parameter: a query key, a header, or a path template variable."""

    name: str
    style: ParamStyle
    description: str
    schema: JsonSchema = field(default_factory=lambda: {"type": "string"})
    required: bool = False
    repeating: bool = False
    options: tuple[str, ...] = ()
    """Values WADL lists as ``option`` elements (and OpenAPI as an ``enum`` when closed)."""
    example: str | None = None


@dataclass(frozen=True, slots=True)
class Response:
    """One status of a method and the media types its body may have (none: no body)."""

    status: int
    description: str
    media_types: tuple[str, ...] = ()
    schema: str | None = None
    """Name of a schema in ``openapi.SCHEMAS`` describing a JSON body."""


@dataclass(frozen=True, slots=True)
class Method:
    name: Literal["GET", "POST", "DELETE"]
    id: str
    """The transaction's name as PS3.18 spells it (WADL ``id``, OpenAPI ``operationId``)."""
    summary: str
    see: str
    params: tuple[Param, ...] = ()
    request_media_types: tuple[tuple[str, Support], ...] = ()
    responses: tuple[Response, ...] = ()
    support: Support = Support.SUPPORTED
    fuzz: bool = True
    """False: left out of the schemathesis run (multipart request bodies it cannot make)."""
    dicomweb: bool = True
    """False: not a PS3.18 transaction (probes, metrics, OpenAPI): not in the WADL."""
    tag: str = "DICOMweb"


@dataclass(frozen=True, slots=True)
class Resource:
    path: str
    """Path template, relative to the DICOMweb base path when ``in_base`` (``/studies/{study}``),
    absolute otherwise (``/healthz``). Variables use the router's names."""
    methods: tuple[Method, ...]
    in_base: bool = True

    def full_path(self, base: str) -> str:
        return (base.rstrip("/") + self.path) if self.in_base else self.path


# --- parameters -----------------------------------------------------------------------------

UID_PATTERN = r"^[0-9]+(\.[0-9]+)*$"
UID_SCHEMA: JsonSchema = {"type": "string", "pattern": UID_PATTERN, "maxLength": 64}
ERROR_TYPE = "application/json"
DICOM_JSON = "application/dicom+json"
MULTIPART_DICOM = 'multipart/related; type="application/dicom"'
MULTIPART_XML = 'multipart/related; type="application/dicom+xml"'
WADL = "application/vnd.sun.wadl+xml"

STUDY = Param("study", "template", "Study Instance UID (0020,000D)", UID_SCHEMA, required=True)
SERIES = Param("series", "template", "Series Instance UID (0020,000E)", UID_SCHEMA, required=True)
INSTANCE = Param("instance", "template", "SOP Instance UID (0008,0018)", UID_SCHEMA, required=True)
FRAMES = Param(
    "frames",
    "template",
    "Frame numbers, 1-based, comma-separated, in the order wanted (PS3.18 §10.4.1.1.5)",
    {"type": "string", "pattern": r"^[1-9][0-9]{0,8}(,[1-9][0-9]{0,8}){0,63}$"},
    required=True,
    example="1",
)
TAG_PATH = Param(
    "path",
    "template",
    "Attribute path of a bulk data value, as in its BulkDataURI (e.g. 7FE00010, or "
    "00540016/0/00181072 for one inside a sequence item)",
    {"type": "string", "pattern": r"^[0-9A-Fa-f]{8}(/[0-9]{1,4}/[0-9A-Fa-f]{8}){0,4}$"},
    required=True,
    example="7FE00010",
)
ACCEPT = Param(
    "accept",
    "query",
    "Acceptable media types; overrides the Accept header (PS3.18 §8.3.3.1)",
    {"type": "string", "maxLength": 512},
)
CHARSET = Param(
    "charset",
    "query",
    "Acceptable character sets (PS3.18 §8.3.3.2); responses are always UTF-8",
    {"type": "string", "maxLength": 128},
)
QIDO_PARAMS = (
    Param(
        "limit",
        "query",
        "Maximum number of results (default 1000, capped at 10000; PS3.18 §8.3.4.4)",
        {"type": "integer", "minimum": 0, "maximum": 100000},
    ),
    Param(
        "offset",
        "query",
        "Number of results to skip (PS3.18 §8.3.4.4)",
        {"type": "integer", "minimum": 0, "maximum": 100000},
    ),
    Param(
        "fuzzymatching",
        "query",
        "Fuzzy matching of person names (PS3.18 §8.3.4.5)",
        {"type": "boolean"},
        options=("true", "false"),
    ),
    Param(
        "emptyvaluematching",
        "query",
        "Keys also match entities where the attribute is empty (PS3.18 §8.3.4.6)",
        {"type": "boolean"},
        options=("true", "false"),
    ),
    Param(
        "includefield",
        "query",
        "Attributes to return besides the required ones: keyword, tag, attribute path or all",
        {
            "type": "array",
            "maxItems": 8,
            "items": {"type": "string", "pattern": r"^(all|[0-9A-Fa-f]{8}|[A-Za-z]{1,64})$"},
        },
        repeating=True,
    ),
    Param(
        "{attributeID}",
        "query",
        "Attribute matching (PS3.18 §8.3.4.1): a keyword or tag, or an attribute path "
        "(00400275.00400009), and the value to match (PS3.4 §C.2.2.2)",
        {
            "type": "object",
            "maxProperties": 3,
            "propertyNames": {"pattern": r"^([0-9A-F]{8}|[A-Z][A-Za-z]{1,63})$"},
            "additionalProperties": {"type": "string", "maxLength": 64},
        },
        repeating=True,
    ),
    ACCEPT,
    CHARSET,
)
RANGE = Param(
    "Range",
    "header",
    "One byte range of a single-part response (RFC 9110 §14.2)",
    {"type": "string", "pattern": r"^bytes=[0-9]{1,6}-[0-9]{0,6}$"},
)
IF_NONE_MATCH = Param(
    "If-None-Match",
    "header",
    "The ETag of a copy the client holds: 304 when it is current (RFC 9110 §13.1.2)",
    {"type": "string", "maxLength": 128},
)
WINDOW = Param(
    "window",
    "query",
    "center,width[,function] with function linear, linear-exact or sigmoid (PS3.18 §8.3.5.1.4)",
    {"type": "string", "maxLength": 64},
    example="40,400,linear",
)
VIEWPORT = Param(
    "viewport",
    "query",
    "vw,vh[,sx,sy,sw,sh]: output size and source region (PS3.18 §8.3.5.1.3)",
    {"type": "string", "maxLength": 64},
    example="256,256",
)
QUALITY = Param(
    "quality",
    "query",
    "JPEG quality 1..100 (PS3.18 §8.3.5.1.5)",
    {"type": "integer", "minimum": 1, "maximum": 100},
)
ICCPROFILE = Param(
    "iccprofile",
    "query",
    "ICC profile of the rendered image (PS3.18 §8.3.5.1.6)",
    options=("no", "yes", "srgb", "adobergb", "rommrgb", "displayp3"),
)
ANNOTATION = Param(
    "annotation",
    "query",
    "Burned-in annotation: patient and/or technique (PS3.18 §8.3.5.1.1)",
    {"type": "string", "pattern": r"^(patient|technique)(,(patient|technique))?$"},
    options=("patient", "technique"),
)
RENDERED_PARAMS = (ACCEPT, ANNOTATION, CHARSET, ICCPROFILE, QUALITY, VIEWPORT, WINDOW)
_POSITIVE = {"type": "integer", "minimum": 1}
URI_RENDERING_PARAMS = (
    Param("frameNumber", "query", "The frame to render, from 1 (§9.1.2.1.6)", _POSITIVE),
    Param("rows", "query", "Height the image fits in (§9.1.2.1.7)", _POSITIVE),
    Param("columns", "query", "Width the image fits in (§9.1.2.1.8)", _POSITIVE),
    Param("region", "query", "x1,y1,x2,y2 as fractions 0.0-1.0 of the image (§9.1.2.1.9)"),
    Param("windowCenter", "query", "Window centre, with windowWidth (§9.1.2.1.10)"),
    Param("windowWidth", "query", "Window width, with windowCenter (§9.1.2.1.11)"),
    Param(
        "imageQuality", "query", "JPEG quality 1-100 (§9.1.2.1.12)", {**_POSITIVE, "maximum": 100}
    ),
    Param("annotation", "query", "patient and/or technique, burned in (§9.1.2.1.5)"),
)
"""WADO-URI's rendering parameters (PS3.18 §9.1.2.1)."""
THUMBNAIL_PARAMS = (ACCEPT, CHARSET, VIEWPORT)

# --- responses ------------------------------------------------------------------------------


def _error(status: int, description: str, *media_types: str) -> Response:
    return Response(status, description, (ERROR_TYPE, *media_types), "Error")


PLAIN = "text/plain"
"""Answers made before a handler runs are aiohttp's plain text: the HTTP parser's 400 for a
request line or header over its limit, and 404 when no route matches the path."""
BAD_REQUEST = _error(
    400, "Malformed request: invalid UID, parameter or value (with a reason)", PLAIN
)
NOT_FOUND = _error(404, "No such study, series, instance, frame or attribute", PLAIN)
NOT_ACCEPTABLE = _error(406, "None of the acceptable media types can be produced")
TOO_BROAD = _error(413, "The search runs too long: narrow it with indexed keys")
RANGE_NOT_SATISFIABLE = _error(416, "The byte range starts past the end of the value")

FRAME_TYPES = (
    "application/octet-stream",
    "image/jpeg",
    "image/jls",
    "image/jp2",
    "image/jpx",
    "image/jphc",
    "image/dicom-rle",
)
"""Bulk data media types of frames (PS3.18 Table 8.7.3-5)."""
VIDEO_TYPES = ("video/mpeg2", "video/mp4", "video/H265")
ENCAPSULATED_DOCUMENT_TYPES = ("application/pdf", "text/xml")
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif")
"""Rendered media types (PS3.18 Table 8.7.4-1) Tessera makes."""


def _multipart(*types: str) -> tuple[str, ...]:
    return tuple(f'multipart/related; type="{media_type}"' for media_type in types)


SEARCH = (
    Response(200, "Matching results", (DICOM_JSON, MULTIPART_XML), "DicomJsonArray"),
    Response(204, "No results match"),
    BAD_REQUEST,
    NOT_ACCEPTABLE,
    TOO_BROAD,
)
RETRIEVE = (
    Response(
        200,
        "The instances, or their pixel data frame by frame",
        (MULTIPART_DICOM, "application/zip", *_multipart(*FRAME_TYPES, *VIDEO_TYPES)),
    ),
    BAD_REQUEST,
    NOT_FOUND,
    NOT_ACCEPTABLE,
)
METADATA = (
    Response(200, "The metadata", (DICOM_JSON, MULTIPART_XML), "DicomJsonArray"),
    Response(304, "The client's copy (If-None-Match) is current"),
    BAD_REQUEST,
    NOT_FOUND,
    NOT_ACCEPTABLE,
)
FRAMES_RESPONSES = (
    Response(
        200, "The frames (one frame: also single part)", (*_multipart(*FRAME_TYPES), *FRAME_TYPES)
    ),
    BAD_REQUEST,
    NOT_FOUND,
    NOT_ACCEPTABLE,
)
_SINGLE_PIXELS = ("application/octet-stream", *VIDEO_TYPES)


def _bulk(single: tuple[str, ...]) -> tuple[Response, ...]:
    return (
        Response(200, "The value(s)", (*_multipart(*FRAME_TYPES, *VIDEO_TYPES), *single)),
        Response(206, "The requested byte range of a single-part value", single),
        BAD_REQUEST,
        NOT_FOUND,
        NOT_ACCEPTABLE,
        RANGE_NOT_SATISFIABLE,
    )


PIXELDATA = _bulk(_SINGLE_PIXELS)
BULKDATA = _bulk((*_SINGLE_PIXELS, *ENCAPSULATED_DOCUMENT_TYPES))


def _rendered_responses(types: tuple[str, ...]) -> tuple[Response, ...]:
    return (Response(200, "The rendered image", types), BAD_REQUEST, NOT_FOUND, NOT_ACCEPTABLE)


RENDERED = _rendered_responses((*IMAGE_TYPES, *VIDEO_TYPES, "multipart/related"))
"""Rendered resources: video is passed through as stored; a study, a series or a list of
frames is ``multipart/related`` with one image per instance or frame."""
THUMBNAIL = _rendered_responses(IMAGE_TYPES)
STORE = (
    Response(200, "Every instance stored", (DICOM_JSON,), "DicomJsonDataset"),
    Response(
        202,
        "Some instances stored, others failed or carry warnings",
        (DICOM_JSON,),
        "DicomJsonDataset",
    ),
    Response(409, "No instance could be stored", (DICOM_JSON,), "DicomJsonDataset"),
    BAD_REQUEST,
    _error(408, "The client fell silent during the body"),
    _error(413, "The request exceeds a limit (TESSERA_MAX_*)"),
    _error(415, "Unsupported request media type"),
)
DELETE = (Response(204, "Deleted"), BAD_REQUEST, NOT_FOUND)
STORE_BODIES = (
    (MULTIPART_DICOM, Support.SUPPORTED),
    ('multipart/related; type="application/dicom+json"', Support.SUPPORTED),
    ('multipart/related; type="application/dicom+xml"', Support.SUPPORTED),
)

# --- resources ------------------------------------------------------------------------------

_LEVELS = {"Study": (STUDY,), "Series": (STUDY, SERIES), "Instance": (STUDY, SERIES, INSTANCE)}


def _level_methods(level: str, path: str) -> Iterator[Resource]:
    """The retrieve resources of one level (PS3.18 §10.4.1.1, Table H-1)."""
    uids = _LEVELS[level]
    noun = ("an " if level == "Instance" else "a ") + level.lower()
    methods: list[Method] = [
        Method(
            "GET",
            f"Retrieve{level}",
            f"Retrieve {noun}",
            "PS3.18 §10.4",
            (*uids, ACCEPT),
            responses=RETRIEVE,
        ),
        Method(
            "DELETE",
            f"Delete{level}",
            f"Delete {noun} (not part of DICOMweb)",
            "docs/CONFORMANCE.md",
            uids,
            responses=DELETE,
        ),
    ]
    if level == "Study":
        methods.append(
            Method(
                "POST",
                "StoreStudyInstances",
                "Store instances of this study",
                "PS3.18 §10.5",
                (STUDY,),
                STORE_BODIES,
                STORE,
                fuzz=False,
            )
        )
    yield Resource(path, tuple(methods))
    yield Resource(
        path + "/metadata",
        (
            Method(
                "GET",
                f"Retrieve{level}Metadata",
                f"{level} metadata",
                "PS3.18 §10.4.1.1.2",
                (*uids, ACCEPT, CHARSET, IF_NONE_MATCH),
                responses=METADATA,
            ),
        ),
    )
    yield Resource(
        path + "/pixeldata",
        (
            Method(
                "GET",
                f"Retrieve{level}PixelData",
                f"{level} pixel data",
                "PS3.18 §10.4.1.1.6",
                (*uids, ACCEPT, RANGE),
                responses=PIXELDATA,
            ),
        ),
    )
    yield from _rendered(level, path, uids)


def _rendered(label: str, path: str, uids: tuple[Param, ...]) -> Iterator[Resource]:
    yield Resource(
        path + "/rendered",
        (
            Method(
                "GET",
                f"RetrieveRendered{label}",
                f"Rendered {label.lower()}",
                "PS3.18 §10.4.1.1.3",
                (*uids, *RENDERED_PARAMS),
                responses=RENDERED,
            ),
        ),
    )
    yield Resource(
        path + "/thumbnail",
        (
            Method(
                "GET",
                f"Retrieve{label}Thumbnail",
                f"{label} thumbnail",
                "PS3.18 §10.4.1.1.7",
                (*uids, *THUMBNAIL_PARAMS),
                responses=THUMBNAIL,
            ),
        ),
    )


def _search(path: str, id_: str, summary: str, uids: tuple[Param, ...]) -> Resource:
    return Resource(
        path,
        (Method("GET", id_, summary, "PS3.18 §10.6", (*uids, *QIDO_PARAMS), responses=SEARCH),),
    )


_S = "/studies/{study}"
_SE = _S + "/series/{series}"
_I = _SE + "/instances/{instance}"
_F = _I + "/frames/{frames}"
_FRAME_UIDS = (STUDY, SERIES, INSTANCE, FRAMES)

CAPABILITIES_METHOD = Method(
    "GET",
    "RetrieveCapabilities",
    "The Capabilities Description (WADL, or JSON); also OPTIONS on the root and resources",
    "PS3.18 §8.9, Annex H",
    (Param("Accept", "header", "application/vnd.sun.wadl+xml or application/json"),),
    responses=(
        Response(
            200,
            "The Capabilities Description",
            (WADL, "application/json", DICOM_JSON),
            "Capabilities",
        ),
        NOT_ACCEPTABLE,
    ),
    dicomweb=False,
    tag="Capabilities",
)


INCLUDE_METADATA = Param(
    "includeMetadata",
    "query",
    "Add each instance's current DICOM JSON (default true)",
    {"type": "boolean"},
    options=("true", "false"),
)
_CHANGE_FEED_ERRORS = (BAD_REQUEST, _error(503, "The event stream cannot be read right now"))
_CHANGE_FEED = (
    Resource(
        "/changefeed",
        (
            Method(
                "GET",
                "RetrieveChangeFeed",
                "Changes (stored, deleted), oldest first",
                "docs/EVENTS.md",
                (
                    Param(
                        "startTime",
                        "query",
                        "Earliest change, inclusive (RFC 3339, with zone)",
                        {"type": "string", "format": "date-time"},
                    ),
                    Param(
                        "endTime",
                        "query",
                        "Latest change, exclusive (RFC 3339, with zone)",
                        {"type": "string", "format": "date-time"},
                    ),
                    Param(
                        "offset",
                        "query",
                        "The last Sequence already seen",
                        {"type": "integer", "minimum": 0},
                    ),
                    Param(
                        "limit",
                        "query",
                        "Maximum entries (default 100)",
                        {"type": "integer", "minimum": 1, "maximum": 1000},
                    ),
                    INCLUDE_METADATA,
                ),
                responses=(
                    Response(200, "The entries", ("application/json",), "ChangeFeed"),
                    *_CHANGE_FEED_ERRORS,
                ),
                dicomweb=False,
                tag="Change feed",
            ),
        ),
    ),
    Resource(
        "/changefeed/latest",
        (
            Method(
                "GET",
                "RetrieveLatestChange",
                "The latest change feed entry",
                "docs/EVENTS.md",
                (INCLUDE_METADATA,),
                responses=(
                    Response(200, "The latest entry", ("application/json",), "ChangeFeedEntry"),
                    *_CHANGE_FEED_ERRORS,
                ),
                dicomweb=False,
                tag="Change feed",
            ),
        ),
    ),
)


def _service(path: str, id_: str, summary: str, responses: tuple[Response, ...]) -> Resource:
    method = Method(
        "GET",
        id_,
        summary,
        "docs/OPERATIONS.md",
        responses=responses,
        dicomweb=False,
        tag="Service",
    )
    return Resource(path, (method,), in_base=False)


RESOURCES: tuple[Resource, ...] = (
    Resource("/", (CAPABILITIES_METHOD,)),
    Resource(
        "/studies",
        (
            Method(
                "GET",
                "SearchForStudies",
                "Search for studies",
                "PS3.18 §10.6",
                QIDO_PARAMS,
                responses=SEARCH,
            ),
            Method(
                "POST",
                "StoreInstances",
                "Store instances",
                "PS3.18 §10.5",
                request_media_types=STORE_BODIES,
                responses=STORE,
                fuzz=False,
            ),
        ),
    ),
    _search("/series", "SearchForSeries", "Search for series", ()),
    _search("/instances", "SearchForInstances", "Search for instances", ()),
    *_level_methods("Study", _S),
    _search(_S + "/series", "SearchForStudySeries", "Search for a study's series", (STUDY,)),
    _search(
        _S + "/instances", "SearchForStudyInstances", "Search for a study's instances", (STUDY,)
    ),
    *_level_methods("Series", _SE),
    _search(
        _SE + "/instances",
        "SearchForSeriesInstances",
        "Search for a series' instances",
        (STUDY, SERIES),
    ),
    *_level_methods("Instance", _I),
    Resource(
        _F,
        (
            Method(
                "GET",
                "RetrieveFrames",
                "Frames of an instance",
                "PS3.18 §10.4.1.1.5",
                (*_FRAME_UIDS, ACCEPT),
                responses=FRAMES_RESPONSES,
            ),
        ),
    ),
    *_rendered("Frames", _F, _FRAME_UIDS),
    Resource(
        _I + "/bulkdata/{path}",
        (
            Method(
                "GET",
                "RetrieveBulkdata",
                "A bulk data value (a BulkDataURI)",
                "PS3.18 §10.4.1.1.4",
                (STUDY, SERIES, INSTANCE, TAG_PATH, ACCEPT, RANGE),
                responses=BULKDATA,
            ),
        ),
    ),
    Resource(
        "/wado",
        (
            Method(
                "GET",
                "RetrieveInstanceWADOURI",
                "WADO-URI",
                "PS3.18 §9",
                (
                    Param("requestType", "query", "WADO", required=True, options=("WADO",)),
                    Param("studyUID", "query", "Study Instance UID", UID_SCHEMA, required=True),
                    Param("seriesUID", "query", "Series Instance UID", UID_SCHEMA, required=True),
                    Param("objectUID", "query", "SOP Instance UID", UID_SCHEMA, required=True),
                    Param(
                        "contentType",
                        "query",
                        "Media type(s) of the response (§9.1.2.1.4)",
                        options=("application/dicom", "image/jpeg", "image/png", "image/gif"),
                    ),
                    Param(
                        "transferSyntax",
                        "query",
                        "Transfer Syntax UID, or * as stored (§9.1.2.2.7)",
                        {"type": "string", "pattern": r"^(\*|[0-9]+(\.[0-9]+)*)$", "maxLength": 64},
                    ),
                    CHARSET,
                    *URI_RENDERING_PARAMS,
                ),
                responses=(
                    Response(
                        200,
                        "The instance, or a rendered image",
                        ("application/dicom", "image/jpeg", "image/png", "image/gif"),
                    ),
                    BAD_REQUEST,
                    NOT_FOUND,
                    NOT_ACCEPTABLE,
                ),
            ),
        ),
    ),
    *_CHANGE_FEED,
    _service(
        "/healthz",
        "Liveness",
        "The gateway answers",
        (Response(200, "Alive", ("application/json",), "Health"),),
    ),
    _service(
        "/readyz",
        "Readiness",
        "NATS, object storage, store and query all answer",
        (
            Response(200, "Ready", ("application/json",), "Readiness"),
            Response(503, "Not ready", ("application/json",), "Readiness"),
        ),
    ),
    _service(
        "/metrics", "Metrics", "Prometheus metrics", (Response(200, "Metrics", ("text/plain",)),)
    ),
    _service(
        "/openapi.json",
        "OpenAPI",
        "This OpenAPI document",
        (Response(200, "OpenAPI 3.1", ("application/json",)),),
    ),
)
"""Every resource and method of the HTTP API. Retrieve Capabilities is also answered at the
bare base path (``ROUTE_ALIASES``) and, with OPTIONS, at every DICOMweb resource."""

ROUTE_ALIASES = {"": "/"}
"""Routes that answer as another resource of the table (relative to the base path)."""


def operations(*, include_in_progress: bool = True) -> Iterator[tuple[Resource, Method]]:
    for resource in RESOURCES:
        for method in resource.methods:
            if include_in_progress or method.support is Support.SUPPORTED:
                yield resource, method


def dicomweb_resources() -> tuple[Resource, ...]:
    """The resources a Capabilities Description describes (the DICOMweb ones)."""
    return tuple(
        Resource(r.path, tuple(m for m in r.methods if m.dicomweb))
        for r in RESOURCES
        if r.in_base and any(m.dicomweb for m in r.methods)
    )


def find_resource(relative_path: str) -> Resource | None:
    """The resource whose template is ``relative_path`` (below the base path)."""
    relative_path = ROUTE_ALIASES.get(relative_path, relative_path)
    return next((r for r in RESOURCES if r.in_base and r.path == relative_path), None)
