"""Build a PS3.10 object from STOW-RS metadata and bulk data (PS3.18 §10.5.1.2).

A "metadata and bulk data" request carries each instance as a dataset in the DICOM JSON Model
(PS3.18 Annex F) or the Native DICOM Model (PS3.19, read by ``xml_model``) whose large values
are BulkDataURIs naming other parts of the same request by their Content-Location. This module
is the pure core that plans, from one such dataset, the PS3.10 file (PS3.10 §7) that
``part10.write_instance`` writes and the archive then ingests like any uploaded file:

* the File Meta Information is made from the dataset's SOP Class and Instance UIDs and the
  transfer syntax implied by the pixel data's media type (PS3.18 Table 8.7.3-5: the media type's
  ``transfer-syntax`` parameter, else the metadata's (0002,0010) when the media type allows it,
  else the media type's default); uncompressed bulk data (``application/octet-stream``,
  little endian, PS3.18 §8.7.3.3.1) gives Explicit VR Little Endian;
* compressed frames, one part each (by the BulkDataURI, or ``{BulkDataURI}/frames/{n}``), are
  encapsulated one fragment per frame with a Basic Offset Table (PS3.5 §A.4); a video stream
  (MPEG-2, MPEG-4, HEVC) is one part, split into fragments (PS3.5 §8.2.5);
* top-level bulk values of OB/OW/OD/OF/OL/OV/UN are copied from their part in chunks, never held
  in memory; other bulk values (inside sequences, or of other VRs) are read, up to
  ``MAX_LOADED_BULK_BYTES``;
* a Study Instance UID missing from the metadata is taken from the request URL when it names
  a study: a coercion, recorded in Original Attributes Sequence (0400,0561) as PS3.18 §10.5.2
  requires, and answered with Warning Reason B000 (PS3.18 Table I.2-1).

Bulk data is taken only from the request's own parts: a BulkDataURI that names no part (say
``http://elsewhere/...``) is refused, never fetched. Rejections raise ``InstanceRejectedError``
with a Failure Reason of PS3.18 Table I.2-2 and a reason that quotes no attribute value.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.uid import UID, ExplicitVRLittleEndian

from tessera_common.errors import FailureReason
from tessera_common.messages import MAX_ASSEMBLE_DATASETS, BulkPart
from tessera_common.uid import is_valid_uid

from .analysis import InstanceRejectedError
from .part10 import VIDEO_TRANSFER_SYNTAXES, InstancePlan, StreamedValue
from .xml_model import NotNativeDicomModelError, xml_to_json

IMPLEMENTATION_CLASS_UID = "2.25.180743775478440478403130075987829425503"
IMPLEMENTATION_VERSION_NAME = "TESSERA"
OCTET_STREAM = "application/octet-stream"
#: Bulk values copied from a part rather than read: the VRs with a 32-bit length.
STREAMED_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
#: Values inside sequences and non-binary bulk values are read into memory, up to this.
MAX_LOADED_BULK_BYTES = 16 * 1024 * 1024
#: Largest value of an element with a 32-bit length (PS3.5 §7.1.2: 0xFFFFFFFF is undefined).
MAX_VALUE_BYTES = 0xFFFFFFFE
PIXEL_DATA = 0x7FE00010
_LONG_VRS = STREAMED_VRS | {"SQ", "SV", "UC", "UR", "UT", "UV"}
_TAG_KEY = re.compile(r"[0-9A-Fa-f]{8}")
_FRAMES_SUFFIX = re.compile(r"(.+)/frames/([1-9][0-9]{0,8})")
_MAX_JSON_DEPTH = 32

#: PS3.18 Table 8.7.3-5: the transfer syntaxes of each compressed media type, default first.
MEDIA_TRANSFER_SYNTAXES: Mapping[str, tuple[str, ...]] = {
    "image/jpeg": (
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.57",
    ),
    "image/dicom-rle": ("1.2.840.10008.1.2.5",),
    "image/jls": ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"),
    "image/jp2": ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"),
    "image/jpx": ("1.2.840.10008.1.2.4.92", "1.2.840.10008.1.2.4.93"),
    "image/jphc": ("1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"),
    "video/mpeg": ("1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.101"),
    "video/mp4": tuple(f"1.2.840.10008.1.2.4.{n}" for n in range(102, 109)),
    "video/mpeg2": ("1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.101"),
    "video/h264": tuple(f"1.2.840.10008.1.2.4.{n}" for n in range(102, 107)),
    "video/h265": ("1.2.840.10008.1.2.4.107", "1.2.840.10008.1.2.4.108"),
}
#: Media types a bulk value other than compressed pixel data may come in.
RAW_MEDIA_TYPES = frozenset({OCTET_STREAM, "application/pdf", "text/xml", "application/xml"})
_REQUIRED_UIDS = (
    ("SOPClassUID", "00080016", "SOP Class UID (0008,0016)"),
    ("SOPInstanceUID", "00080018", "SOP Instance UID (0008,0018)"),
    ("StudyInstanceUID", "0020000D", "Study Instance UID (0020,000D)"),
    ("SeriesInstanceUID", "0020000E", "Series Instance UID (0020,000E)"),
)


def _rejected(
    reason: str, code: FailureReason = FailureReason.CANNOT_UNDERSTAND, /, **uids: Any
) -> InstanceRejectedError:
    return InstanceRejectedError(code, reason, **uids)


def parse_metadata(data: bytes, media_type: str) -> list[Any]:
    """The datasets of one metadata part: a JSON array of datasets (PS3.18 §F.2) or one
    Native DICOM Model document. Each is checked further by ``plan_instance``."""
    if media_type == "application/dicom+xml":
        try:
            return [xml_to_json(data)]
        except NotNativeDicomModelError as exc:
            raise _rejected(f"the XML metadata part is refused: {exc} (PS3.19 §A.1)") from exc
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise _rejected(
            f"the metadata part is not JSON (line {exc.lineno}, column {exc.colno}); send an "
            "array of datasets in the DICOM JSON Model (PS3.18 Annex F)"
        ) from exc
    datasets = document if isinstance(document, list) else [document]
    if not datasets:
        raise _rejected("the metadata part is an empty JSON array; it names no instance")
    if len(datasets) > MAX_ASSEMBLE_DATASETS:
        raise _rejected(
            f"the metadata part holds {len(datasets)} datasets, more than "
            f"{MAX_ASSEMBLE_DATASETS}; send them in several parts"
        )
    return datasets


def check_dicom_json(dataset: Any, depth: int = 0) -> dict[str, Any]:
    """``dataset`` if it has the shape of the DICOM JSON Model (PS3.18 §F.2): an object whose
    keys are 8 hex digits and whose values are objects with a ``vr`` and at most one of
    ``Value``, ``BulkDataURI`` and ``InlineBinary``."""

    def fail(problem: str) -> InstanceRejectedError:
        return _rejected(f"the metadata is not DICOM JSON: {problem} (PS3.18 §F.2)")

    if depth > _MAX_JSON_DEPTH:
        raise fail(f"sequences nested deeper than {_MAX_JSON_DEPTH} levels")
    if not isinstance(dataset, dict):
        raise fail(f"a dataset is a JSON {type(dataset).__name__}, not an object")
    for key, attribute in dataset.items():
        if not _TAG_KEY.fullmatch(key):
            raise fail(f"key {key[:20]!r} is not a tag of 8 hexadecimal digits")
        if not isinstance(attribute, dict) or not isinstance(attribute.get("vr"), str):
            raise fail(f"attribute {key} is not an object with a vr")
        if len(attribute["vr"]) != 2 or not attribute["vr"].isalpha():
            raise fail(f"attribute {key} has an invalid vr")
        if len({"Value", "BulkDataURI", "InlineBinary"} & attribute.keys()) > 1:
            raise fail(f"attribute {key} has more than one of Value, BulkDataURI, InlineBinary")
        if "BulkDataURI" in attribute and not isinstance(attribute["BulkDataURI"], str):
            raise fail(f"the BulkDataURI of {key} is not a string")
        if "InlineBinary" in attribute and not isinstance(attribute["InlineBinary"], str):
            raise fail(f"the InlineBinary of {key} is not a string")
        value = attribute.get("Value")
        if value is not None and not isinstance(value, list):
            raise fail(f"the Value of {key} is not an array")
        if attribute["vr"] == "SQ":
            for item in value or []:
                check_dicom_json(item, depth + 1)
    return dataset


class PartIndex:
    """The bulk data parts of a request, found by Content-Location: a BulkDataURI names one
    part, or several parts named ``{BulkDataURI}/frames/{n}`` (PS3.18 §8.7.3.3.2: compressed
    multi-frame pixel data travels one frame per part)."""

    def __init__(self, parts: Sequence[BulkPart]) -> None:
        self.parts = list(parts)
        self._exact: dict[str, list[int]] = {}
        self._frames: dict[str, dict[int, int]] = {}
        for index, part in enumerate(self.parts):
            location = part.content_location.strip()
            self._exact.setdefault(location, []).append(index)
            match = _FRAMES_SUFFIX.fullmatch(location)
            if match:
                self._frames.setdefault(match[1], {})[int(match[2])] = index

    def resolve(self, uri: str) -> list[int]:
        """Indexes of the parts holding the value at ``uri``, in frame order; [] when none."""
        uri = uri.strip()
        if uri in self._exact:
            return self._exact[uri]
        frames = self._frames.get(uri, {})
        return [frames[number] for number in sorted(frames)]


def referenced_parts(metadata: Any, parts: PartIndex, depth: int = 0) -> set[int]:
    """The parts that the BulkDataURIs of ``metadata`` name, whether or not the dataset turns
    out to be storable; a part outside every such set is referenced by nothing."""
    found: set[int] = set()
    if not isinstance(metadata, dict) or depth > _MAX_JSON_DEPTH:
        return found
    for attribute in metadata.values():
        if not isinstance(attribute, dict):
            continue
        uri = attribute.get("BulkDataURI")
        if isinstance(uri, str):
            found.update(parts.resolve(uri))
        values = attribute.get("Value")
        if attribute.get("vr") == "SQ" and isinstance(values, list):
            for item in values:
                found |= referenced_parts(item, parts, depth + 1)
    return found


def _uids(metadata: Mapping[str, Any]) -> dict[str, str | None]:
    """The four UIDs that are readable and valid, for the Store Instances Response."""
    found: dict[str, str | None] = {}
    names = ("sop_class_uid", "sop_uid", "study_uid", "series_uid")
    for name, (_, key, _) in zip(names, _REQUIRED_UIDS, strict=True):
        value = _first_value(metadata, key)
        found[name] = value if isinstance(value, str) and is_valid_uid(value) else None
    return found


def _first_value(metadata: Mapping[str, Any], key: str) -> Any:
    attribute = metadata.get(key)
    if not isinstance(attribute, Mapping):
        return None
    values = attribute.get("Value")
    return values[0] if isinstance(values, list) and values else None


def plan_instance(
    metadata: Any,
    parts: PartIndex,
    read_part: Callable[[int], bytes],
    *,
    expected_study_uid: str | None,
) -> InstancePlan:
    """Check one dataset of the metadata and plan its PS3.10 file.

    ``read_part(i)`` returns the bytes of part ``i`` (only called for parts no larger than
    ``MAX_LOADED_BULK_BYTES``). Raises ``InstanceRejectedError``.
    """
    metadata = dict(check_dicom_json(metadata))
    uids = _uids(metadata)
    original = None
    if expected_study_uid and _first_value(metadata, "0020000D") in (None, ""):
        metadata["0020000D"] = {"vr": "UI", "Value": [expected_study_uid]}
        uids["study_uid"] = expected_study_uid
        original = _original_attributes_item()
    for _, key, label in _REQUIRED_UIDS:
        value = _first_value(metadata, key)
        if not (isinstance(value, str) and is_valid_uid(value)):
            problem = "is missing" if value in (None, "") else "is not a valid UID"
            raise _rejected(
                f"the {label} {problem}; every instance needs one (PS3.3 §C.12.1, PS3.5 §9.1)",
                FailureReason.DATASET_DOES_NOT_MATCH_SOP_CLASS,
                **uids,
            )
    meta = {key: metadata.pop(key) for key in list(metadata) if key.upper().startswith("0002")}
    meta_class = _first_value(meta, "00020002")
    if meta_class is not None and meta_class != uids["sop_class_uid"]:
        raise _rejected(
            "the Media Storage SOP Class UID (0002,0002) of the metadata differs from its SOP "
            "Class UID (0008,0016); they must be equal (PS3.10 §7.1)",
            FailureReason.DATASET_DOES_NOT_MATCH_SOP_CLASS,
            **uids,
        )
    declared_syntax = _first_value(meta, "00020010")
    if declared_syntax is not None and not (
        isinstance(declared_syntax, str) and UID(declared_syntax).is_transfer_syntax
    ):
        raise _rejected(
            "the Transfer Syntax UID (0002,0010) of the metadata is not a known transfer "
            "syntax (PS3.5 §10)",
            FailureReason.TRANSFER_SYNTAX_NOT_SUPPORTED,
            **uids,
        )
    streamed: dict[int, StreamedValue] = {}
    referenced: set[int] = set()
    for key in list(metadata):
        attribute = metadata[key]
        if "BulkDataURI" in attribute and attribute["vr"] in STREAMED_VRS:
            metadata.pop(key)
            found = _resolve(parts, attribute["BulkDataURI"], key, uids)
            sizes = [parts.parts[i].size for i in found]
            streamed[int(key, 16)] = StreamedValue(int(key, 16), attribute["vr"], found, sizes)
            referenced.update(found)
    if original is not None:
        _append_original(metadata, original)

    def bulk_handler(tag: str, vr: str, uri: str) -> bytes:
        found = _resolve(parts, uri, tag, uids)
        size = sum(parts.parts[i].size for i in found)
        if size > MAX_LOADED_BULK_BYTES:
            raise _rejected(
                f"the bulk data of ({tag[:4]},{tag[4:]}) is {size} bytes; values inside "
                f"sequences may have at most {MAX_LOADED_BULK_BYTES} (oversized element)",
                **uids,
            )
        referenced.update(found)
        return b"".join(read_part(i) for i in found)

    try:
        dataset = Dataset.from_json(metadata, bulk_handler)
    except InstanceRejectedError:
        raise
    except Exception as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, InstanceRejectedError):
            raise cause from exc
        raise _rejected(
            f"the metadata is not valid DICOM JSON ({type(exc).__name__}) (PS3.18 Annex F)",
            **uids,
        ) from exc
    syntax = _transfer_syntax(dataset, streamed, parts, declared_syntax, uids)
    _check_pixel_parts(dataset, streamed, parts, syntax, uids)
    _check_value_lengths(dataset, uids)
    file_meta = FileMetaDataset()
    file_meta.MediaStorageSOPClassUID = UID(str(uids["sop_class_uid"]))
    file_meta.MediaStorageSOPInstanceUID = UID(str(uids["sop_uid"]))
    file_meta.TransferSyntaxUID = UID(syntax)
    file_meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    file_meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    originals = [original] if original else None
    return InstancePlan(dataset, file_meta, streamed, referenced, originals)


def _resolve(parts: PartIndex, uri: str, key: str, uids: Mapping[str, Any]) -> list[int]:
    found = parts.resolve(uri)
    if not found:
        shown = uri if len(uri) <= 120 and uri.isprintable() else repr(uri[:120])
        raise _rejected(
            f"the BulkDataURI {shown} of ({key[:4]},{key[4:]}) names no part of this request; "
            "bulk data is taken only from parts whose Content-Location equals the BulkDataURI, "
            "never fetched (PS3.18 §10.5.1.2)",
            **uids,
        )
    return found


def _original_attributes_item() -> dict[str, Any]:
    """An item of Original Attributes Sequence (PS3.3 §C.12.1.1.9) recording that the Study
    Instance UID was absent and added from the request URL."""
    now = datetime.now(UTC).strftime("%Y%m%d%H%M%S.%f+0000")
    return {
        "04000550": {"vr": "SQ", "Value": [{"0020000D": {"vr": "UI"}}]},
        "04000562": {"vr": "DT", "Value": [now]},
        "04000563": {"vr": "LO", "Value": [IMPLEMENTATION_VERSION_NAME]},
        "04000564": {"vr": "LO"},
        "04000565": {"vr": "CS", "Value": ["COERCE"]},
    }


def _append_original(metadata: dict[str, Any], item: dict[str, Any]) -> None:
    existing = metadata.get("04000561")
    items = list(existing.get("Value") or []) if isinstance(existing, dict) else []
    metadata["04000561"] = {"vr": "SQ", "Value": [*items, item]}


def _transfer_syntax(
    dataset: Dataset,
    streamed: Mapping[int, StreamedValue],
    parts: PartIndex,
    declared: str | None,
    uids: Mapping[str, Any],
) -> str:
    """The transfer syntax of the file (PS3.18 §8.7.3.3, Table 8.7.3-5)."""
    pixels = streamed.get(PIXEL_DATA)
    if pixels is None:
        if declared and PIXEL_DATA in dataset and UID(declared).is_encapsulated:
            # InlineBinary pixel data of a compressed dataset is its encapsulated value.
            dataset[PIXEL_DATA].is_undefined_length = True
            return declared
        return ExplicitVRLittleEndian
    media = {parts.parts[i].media_type for i in pixels.parts}
    wanted = {parts.parts[i].transfer_syntax for i in pixels.parts}
    if len(media) > 1 or len(wanted) > 1:
        raise _rejected(
            "the pixel data parts have different media types or transfer-syntax parameters; "
            "send every frame in one",
            FailureReason.TRANSFER_SYNTAX_NOT_SUPPORTED,
            **uids,
        )
    media_type, parameter = media.pop(), wanted.pop()
    if media_type == OCTET_STREAM:
        if parameter not in (None, "*", ExplicitVRLittleEndian):
            raise _rejected(
                f"transfer-syntax={parameter} does not describe uncompressed bulk data, which "
                "is little endian (PS3.18 §8.7.3.3.1)",
                FailureReason.TRANSFER_SYNTAX_NOT_SUPPORTED,
                **uids,
            )
        return ExplicitVRLittleEndian
    syntaxes = MEDIA_TRANSFER_SYNTAXES.get(media_type)
    if syntaxes is None:
        raise _rejected(
            f"pixel data cannot come in a {media_type} part (PS3.18 Table 8.7.3-5)",
            FailureReason.TRANSFER_SYNTAX_NOT_SUPPORTED,
            **uids,
        )
    if parameter is not None:
        if parameter not in syntaxes:
            raise _rejected(
                f"transfer-syntax={parameter} is not a transfer syntax of {media_type} "
                f"(one of {', '.join(syntaxes)}; PS3.18 Table 8.7.3-5)",
                FailureReason.TRANSFER_SYNTAX_NOT_SUPPORTED,
                **uids,
            )
        syntax = parameter
    else:
        syntax = declared if declared in syntaxes else syntaxes[0]
    pixels.encapsulated = True
    return syntax


def _int(dataset: Dataset, keyword: str, default: int | None = None) -> int | None:
    try:
        value = dataset.get(keyword)
        return default if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return default


def _check_pixel_parts(
    dataset: Dataset,
    streamed: Mapping[int, StreamedValue],
    parts: PartIndex,
    syntax: str,
    uids: Mapping[str, Any],
) -> None:
    """The bulk data must fit what the metadata says of the image (PS3.3 §C.7.6.3)."""
    for value in streamed.values():
        sizes = [parts.parts[i].size for i in value.parts]
        media = {parts.parts[i].media_type for i in value.parts}
        where = f"({value.tag >> 16:04X},{value.tag & 0xFFFF:04X})"
        if not value.encapsulated:
            if not media <= RAW_MEDIA_TYPES:
                raise _rejected(
                    f"the value of {where} cannot come in a {sorted(media)[0]} part; "
                    "send it as application/octet-stream",
                    **uids,
                )
            if sum(sizes) > MAX_VALUE_BYTES:
                raise _rejected(f"the value of {where} is too large for one element", **uids)
    pixels = streamed.get(PIXEL_DATA)
    if pixels is None:
        return
    frames = _int(dataset, "NumberOfFrames", 1) or 1
    sizes = [parts.parts[i].size for i in pixels.parts]
    if pixels.encapsulated:
        if syntax in VIDEO_TRANSFER_SYNTAXES:
            if len(sizes) != 1:
                raise _rejected(
                    f"a video stream is one bulk data part, not {len(sizes)} (PS3.5 §8.2.5)",
                    **uids,
                )
        elif len(sizes) != frames:
            raise _rejected(
                f"the metadata has {frames} frame(s) but {len(sizes)} compressed pixel data "
                "part(s) were sent; send one part per frame (PS3.18 §8.7.3.3.2)",
                **uids,
            )
        if any(size == 0 or size > MAX_VALUE_BYTES - 8 for size in sizes):
            raise _rejected("a compressed frame part is empty or too large", **uids)
        return
    rows, columns = _int(dataset, "Rows"), _int(dataset, "Columns")
    bits, samples = _int(dataset, "BitsAllocated"), _int(dataset, "SamplesPerPixel", 1)
    if rows is None or columns is None or bits is None or samples is None:
        return
    expected = (rows * columns * samples * frames * bits + 7) // 8
    total = sum(sizes)
    if total > expected + expected % 2:
        raise _rejected(
            f"the pixel data parts hold {total} bytes, more than the {expected} that Rows, "
            "Columns, Samples per Pixel, Bits Allocated and Number of Frames describe",
            **uids,
        )
    if total < expected:
        raise _rejected(
            f"the pixel data parts hold {total} bytes, fewer than the {expected} the image "
            "attributes describe (truncated bulk data?)",
            **uids,
        )


def _check_value_lengths(dataset: Dataset, uids: Mapping[str, Any]) -> None:
    """Refuse values too long for their VR's 16-bit length in Explicit VR Little Endian
    (PS3.5 §7.1.2); pydicom would silently turn such an element into UN."""
    encodings = dataset.get("SpecificCharacterSet") or "iso8859"
    for element in dataset.iterall():
        if element.VR in _LONG_VRS or element.value is None:
            continue
        buffer = DicomBytesIO()
        buffer.is_little_endian, buffer.is_implicit_VR = True, False
        try:
            write_data_element(buffer, element, encodings)
        except Exception as exc:
            raise _rejected(
                f"attribute {element.tag} has a value that cannot be encoded as {element.VR} "
                "(PS3.5 §6.2)",
                **uids,
            ) from exc
        if buffer.getvalue()[4:6] != element.VR.encode("ascii"):
            raise _rejected(
                f"attribute {element.tag} is oversized: its value is longer than the 65534 "
                f"bytes a {element.VR} element can hold (PS3.5 §7.1.2)",
                **uids,
            )
