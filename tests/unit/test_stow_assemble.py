"""STOW-RS metadata + bulk data requests (PS3.18 §10.5.1.2): building PS3.10 objects from DICOM
JSON / PS3.19 XML and bulk data parts, and the gateway's request and part classification."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import generate_fragments, generate_frames
from tests.support.dicom_files import SHARED_TESTDATA

from tessera_common.errors import ErrorCode, FailureReason, TesseraError
from tessera_common.messages import (
    MAX_ASSEMBLE_DATASETS,
    AssembleReply,
    BulkPart,
    InstanceOutcome,
)
from tessera_gateway.dicom_xml import to_xml
from tessera_gateway.stow import describe_part, request_form, response_media_type
from tessera_store.analysis import InstanceRejectedError
from tessera_store.assemble import (
    MEDIA_TRANSFER_SYNTAXES,
    PartIndex,
    _original_attributes_item,
    parse_metadata,
    plan_instance,
)
from tessera_store.part10 import VIDEO_TRANSFER_SYNTAXES, write_instance
from tessera_store.xml_model import NotNativeDicomModelError, xml_to_json

#: The media type a client sends each compressed transfer syntax in (PS3.18 Table 8.7.3-5).
MEDIA_OF_SYNTAX = {
    syntax: media
    for media in (
        "image/jpeg",
        "image/jls",
        "image/jp2",
        "image/jphc",
        "image/dicom-rle",
        "video/mpeg",
        "video/mp4",
    )
    for syntax in MEDIA_TRANSFER_SYNTAXES[media]
}


@dataclass
class SplitInstance:
    """A PS3.10 file as a STOW metadata + bulk data client sends it."""

    metadata: dict[str, Any]
    parts: list[tuple[str, str, bytes]]  # (Content-Location, Content-Type, bytes)


def split_instance(ds: Dataset, prefix: str = "urn:bulk:") -> SplitInstance:
    """``ds`` as DICOM JSON whose binary values over 256 bytes are bulk data parts: pixel data
    as frames of its compressed media type (or one video stream), anything else as
    ``application/octet-stream``."""
    syntax = str(ds.file_meta.TransferSyntaxUID)
    pixel_data = ds.get(0x7FE00010)
    parts: list[tuple[str, str, bytes]] = []

    def handler(element: pydicom.DataElement) -> str:
        uri = f"{prefix}{ds.SOPInstanceUID}/{len(parts)}"
        if element is pixel_data and syntax in MEDIA_OF_SYNTAX:
            media = f"{MEDIA_OF_SYNTAX[syntax]}; transfer-syntax={syntax}"
            if syntax in VIDEO_TRANSFER_SYNTAXES:
                parts.append((uri, media, video_stream(element.value)))
            else:
                frames = int(ds.get("NumberOfFrames") or 1)
                for n, frame in enumerate(generate_frames(element.value, number_of_frames=frames)):
                    parts.append((f"{uri}/frames/{n + 1}", media, frame))
        else:
            parts.append((uri, "application/octet-stream", element.value))
        return uri

    metadata = ds.to_json_dict(bulk_data_threshold=256, bulk_data_element_handler=handler)
    return SplitInstance(metadata, parts)


def video_stream(value: bytes) -> bytes:
    """The fragments of encapsulated video pixel data joined (PS3.5 §8.2.5); item 1 is the
    Basic Offset Table."""
    return b"".join(list(generate_fragments(value))[1:])


def bulk_parts(parts: list[tuple[str, str, bytes]]) -> list[BulkPart]:
    found = []
    for n, (location, content_type, data) in enumerate(parts):
        essence, _, params = content_type.partition(";")
        syntax = params.split("=", 1)[1].strip() if "transfer-syntax=" in params else None
        found.append(
            BulkPart(
                key=f"incoming/{n}",
                content_location=location,
                media_type=essence.strip(),
                transfer_syntax=syntax,
                size=len(data),
            )
        )
    return found


def assemble(
    metadata: Any, parts: list[tuple[str, str, bytes]], study: str | None = None
) -> Dataset:
    index = PartIndex(bulk_parts(parts))
    plan = plan_instance(metadata, index, lambda i: parts[i][2], expected_study_uid=study)
    out = io.BytesIO()
    write_instance(plan, out, lambda i: io.BytesIO(parts[i][2]))
    return pydicom.dcmread(io.BytesIO(out.getvalue()))


def attributes(ds: Dataset) -> dict[str, Any]:
    """Every attribute but the pixel data, in the JSON Model, binary values inline; person
    names lose trailing empty components (``^^``, insignificant by PS3.5 §6.2.1), which
    PS3.19 XML has no way to write."""
    found = ds.to_json_dict(bulk_data_threshold=2**40)
    found.pop("7FE00010", None)
    return _empty_names(found)


def _empty_names(dataset: dict[str, Any]) -> dict[str, Any]:
    for attribute in dataset.values():
        values = attribute.get("Value")
        if attribute["vr"] == "PN" and values:
            trimmed = [{g: str(t).rstrip("^") for g, t in v.items()} for v in values]
            names = [v for v in trimmed if any(v.values())]
            attribute.pop("Value")
            if names:
                attribute["Value"] = names
        elif attribute["vr"] == "SQ" and values:
            attribute["Value"] = [_empty_names(item) for item in values]
    return dataset


def same_pixels(original: Dataset, stored: Dataset) -> None:
    syntax = original.file_meta.TransferSyntaxUID
    if "PixelData" not in original:
        return
    if syntax in VIDEO_TRANSFER_SYNTAXES:
        stream = video_stream(original.PixelData)
        assert video_stream(stored.PixelData)[: len(stream)] == stream
        return
    assert np.array_equal(original.pixel_array, stored.pixel_array)


ROUND_TRIPS = {
    "native-implicit-le": "transcode/ct_ivrle.dcm",
    "jpeg-baseline": "transcode/us8_jpeg_baseline.dcm",
    "jpeg-lossless-multiframe": "transcode/emri_jpeg_lossless_p14.dcm",
    "jpeg-ls": "transcode/ct_jpegls_lossless.dcm",
    "rle": "transcode/ct_rle.dcm",
    "j2k": "transcode/ct_j2k_lossless.dcm",
    "htj2k-multiframe": "htj2k/emri_htj2k_lossless.dcm",
    "mpeg4-video": "video/us_h264.dcm",
    "mpeg2-video": "video/video_endoscopic_mpeg2.dcm",
    "pdf": "pdf/encapsulated_pdf.dcm",
    "native-multiframe": "synthetic/xa_multiframe.dcm",
}


@pytest.mark.parametrize("name", sorted(ROUND_TRIPS), ids=sorted(ROUND_TRIPS))
@pytest.mark.parametrize("form", ["json", "xml"])
def test_round_trip(name: str, form: str) -> None:
    original = pydicom.dcmread(SHARED_TESTDATA / ROUND_TRIPS[name])
    split = split_instance(original)
    metadata = split.metadata if form == "json" else xml_to_json(to_xml(split.metadata))
    stored = assemble(metadata, split.parts)
    assert attributes(stored) == attributes(original)
    syntax = original.file_meta.TransferSyntaxUID
    expected = syntax if syntax.is_encapsulated else pydicom.uid.ExplicitVRLittleEndian
    assert stored.file_meta.TransferSyntaxUID == expected
    assert stored.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
    same_pixels(original, stored)


def test_multiframe_basic_offset_table() -> None:
    original = pydicom.dcmread(SHARED_TESTDATA / "htj2k/emri_htj2k_lossless.dcm")
    split = split_instance(original)
    stored = assemble(split.metadata, split.parts)
    table_item, *fragments = generate_fragments(stored.PixelData)  # the table is item 1
    table = np.frombuffer(table_item, "<u4")
    assert len(fragments) == len(table) == 10
    assert table[0] == 0
    assert list(np.diff(table)) == [len(f) + 8 for f in fragments[:-1]]


def test_default_transfer_syntax_of_media_type() -> None:
    """image/jpeg without a transfer-syntax parameter is JPEG Lossless SV1 (the RESTful
    default of Table 8.7.3-5), unless the metadata's (0002,0010) names another of its."""
    original = pydicom.dcmread(SHARED_TESTDATA / "transcode/ct_jpeg_lossless_sv1.dcm")
    split = split_instance(original)
    parts = [(loc, "image/jpeg", data) for loc, _, data in split.parts]
    assert assemble(split.metadata, parts).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.70"
    declared = {**split.metadata, "00020010": {"vr": "UI", "Value": ["1.2.840.10008.1.2.4.57"]}}
    stored = assemble(declared, parts)
    assert stored.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.57"


def test_study_uid_from_the_url_is_a_coercion() -> None:
    original = pydicom.dcmread(SHARED_TESTDATA / "transcode/ct_ivrle.dcm")
    split = split_instance(original)
    del split.metadata["0020000D"]
    index = PartIndex(bulk_parts(split.parts))
    plan = plan_instance(
        split.metadata, index, lambda i: split.parts[i][2], expected_study_uid="1.2.3"
    )
    assert plan.dataset.StudyInstanceUID == "1.2.3"
    assert plan.original_attributes is not None
    item = plan.dataset.OriginalAttributesSequence[-1]
    assert item.ReasonForTheAttributeModification == "COERCE"
    assert "StudyInstanceUID" in item.ModifiedAttributesSequence[0]


def _ct() -> SplitInstance:
    return split_instance(pydicom.dcmread(SHARED_TESTDATA / "transcode/ct_ivrle.dcm"))


def _jpeg() -> SplitInstance:
    return split_instance(pydicom.dcmread(SHARED_TESTDATA / "transcode/us8_jpeg_baseline.dcm"))


def _without(key: str) -> Callable[[SplitInstance], None]:
    def change(split: SplitInstance) -> None:
        del split.metadata[key]

    return change


def _set(key: str, attribute: dict[str, Any]) -> Callable[[SplitInstance], None]:
    def change(split: SplitInstance) -> None:
        split.metadata[key] = attribute

    return change


def _pixel_uri(uri: str) -> Callable[[SplitInstance], None]:
    def change(split: SplitInstance) -> None:
        split.metadata["7FE00010"]["BulkDataURI"] = uri

    return change


def _grow_pixels(split: SplitInstance) -> None:
    location, media, data = split.parts[-1]
    split.parts[-1] = (location, media, data + b"\0" * 64)


def _shrink_pixels(split: SplitInstance) -> None:
    location, media, data = split.parts[-1]
    split.parts[-1] = (location, media, data[:-64])


def _syntax(parameter: str) -> Callable[[SplitInstance], None]:
    def change(split: SplitInstance) -> None:
        split.parts = [
            (loc, f"image/jpeg; transfer-syntax={parameter}", d) for loc, _, d in split.parts
        ]

    return change


def _extra_frame(split: SplitInstance) -> None:
    location, media, data = split.parts[-1]
    split.parts.append((location.replace("/frames/1", "/frames/2"), media, data))


HOSTILE: dict[
    str, tuple[Callable[[], SplitInstance], Callable[[SplitInstance], None], int, str]
] = {
    "bulk-uri-outside-the-request": (
        _ct,
        _pixel_uri("http://evil.invalid/pixels"),
        FailureReason.CANNOT_UNDERSTAND,
        "never fetched",
    ),
    "missing-sop-instance-uid": (
        _ct,
        _without("00080018"),
        FailureReason.DATASET_DOES_NOT_MATCH_SOP_CLASS,
        "missing",
    ),
    "missing-series-uid": (
        _ct,
        _without("0020000E"),
        FailureReason.DATASET_DOES_NOT_MATCH_SOP_CLASS,
        "missing",
    ),
    "invalid-study-uid": (
        _ct,
        _set("0020000D", {"vr": "UI", "Value": ["1.2.abc"]}),
        FailureReason.DATASET_DOES_NOT_MATCH_SOP_CLASS,
        "not a valid UID",
    ),
    "sop-class-differs-from-file-meta": (
        _ct,
        _set("00020002", {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.4"]}),
        FailureReason.DATASET_DOES_NOT_MATCH_SOP_CLASS,
        "Media Storage SOP Class",
    ),
    "unknown-transfer-syntax-in-metadata": (
        _ct,
        _set("00020010", {"vr": "UI", "Value": ["1.2.3.4.5"]}),
        FailureReason.TRANSFER_SYNTAX_NOT_SUPPORTED,
        "not a known transfer syntax",
    ),
    "unknown-transfer-syntax-parameter": (
        _jpeg,
        _syntax("1.2.3.4"),
        FailureReason.TRANSFER_SYNTAX_NOT_SUPPORTED,
        "image/jpeg",
    ),
    "pixel-data-larger-than-the-image": (
        _ct,
        _grow_pixels,
        FailureReason.CANNOT_UNDERSTAND,
        "more than",
    ),
    "pixel-data-smaller-than-the-image": (
        _ct,
        _shrink_pixels,
        FailureReason.CANNOT_UNDERSTAND,
        "fewer than",
    ),
    "more-frames-than-the-metadata-says": (
        _jpeg,
        _extra_frame,
        FailureReason.CANNOT_UNDERSTAND,
        "1 frame(s) but 2",
    ),
    "oversized-element": (
        _ct,
        _set("00081030", {"vr": "LO", "Value": ["x" * 70_000]}),
        FailureReason.CANNOT_UNDERSTAND,
        "oversized",
    ),
    "not-dicom-json-key": (
        _ct,
        _set("PatientName", {"vr": "PN"}),
        FailureReason.CANNOT_UNDERSTAND,
        "not DICOM JSON",
    ),
    "not-dicom-json-value": (
        _ct,
        _set("00100010", {"Value": ["x"]}),
        FailureReason.CANNOT_UNDERSTAND,
        "not DICOM JSON",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE), ids=sorted(HOSTILE))
def test_hostile_dataset(case: str) -> None:
    make, change, failure, words = HOSTILE[case]
    split = make()
    change(split)
    with pytest.raises(InstanceRejectedError) as caught:
        assemble(split.metadata, split.parts)
    assert caught.value.failure_reason == failure, caught.value.reason
    assert words in caught.value.reason


NOT_METADATA = {
    "not-json": (b"{not json", "application/dicom+json", "not JSON"),
    "empty-array": (b"[]", "application/dicom+json", "empty"),
    "xml-external-entity": (
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        b"<NativeDicomModel>&e;</NativeDicomModel>",
        "application/dicom+xml",
        "never resolved",
    ),
    "xml-billion-laughs": (
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
        b"<NativeDicomModel>&b;</NativeDicomModel>",
        "application/dicom+xml",
        "never resolved",
    ),
    "xml-dtd-only": (
        b'<!DOCTYPE NativeDicomModel SYSTEM "http://evil.invalid/x.dtd"><NativeDicomModel/>',
        "application/dicom+xml",
        "never resolved",
    ),
    "xml-other-root": (b"<html/>", "application/dicom+xml", "not <NativeDicomModel>"),
    "xml-malformed": (b"<NativeDicomModel>", "application/dicom+xml", "not well-formed"),
}


@pytest.mark.parametrize("case", sorted(NOT_METADATA), ids=sorted(NOT_METADATA))
def test_unreadable_metadata_parts(case: str) -> None:
    data, media_type, words = NOT_METADATA[case]
    with pytest.raises(InstanceRejectedError) as caught:
        parse_metadata(data, media_type)
    assert caught.value.failure_reason == FailureReason.CANNOT_UNDERSTAND
    assert words in caught.value.reason


def test_xml_reader_reads_what_the_xml_writer_writes() -> None:
    metadata = {
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane", "Ideographic": "D^J"}]},
        "00280010": {"vr": "US", "Value": [512]},
        "00281050": {"vr": "DS", "Value": [40.5, 400]},
        "00081115": {"vr": "SQ", "Value": [{"0020000E": {"vr": "UI", "Value": ["1.2.3"]}}]},
        "00091010": {"vr": "OB", "InlineBinary": "AAEC"},
        "7FE00010": {"vr": "OW", "BulkDataURI": "urn:x"},
        "00081030": {"vr": "LO", "Value": ["a < b & c"]},
    }
    assert xml_to_json(to_xml(metadata)) == metadata


def test_xml_without_namespace_and_uuid_bulk_data() -> None:
    document = (
        b'<NativeDicomModel><DicomAttribute tag="7FE00010" vr="OB">'
        b'<BulkData uuid="u-1"/></DicomAttribute></NativeDicomModel>'
    )
    assert xml_to_json(document) == {"7FE00010": {"vr": "OB", "BulkDataURI": "u-1"}}
    with pytest.raises(NotNativeDicomModelError):
        xml_to_json(b'<NativeDicomModel><DicomAttribute tag="zz" vr="OB"/></NativeDicomModel>')


@pytest.mark.parametrize(
    ("header", "part_type", "multipart"),
    [
        (
            'multipart/related; type="application/dicom+json"; boundary=a',
            "application/dicom+json",
            True,
        ),
        (
            "multipart/related; type=application/dicom+xml; boundary=a",
            "application/dicom+xml",
            True,
        ),
        ("application/dicom", "application/dicom", False),
        ("Application/DICOM+JSON", "application/dicom+json", False),
    ],
    ids=["json-parts", "xml-parts", "single-part", "single-metadata"],
)
def test_request_forms(header: str, part_type: str, multipart: bool) -> None:
    form = request_form(header)
    assert form.part_type == part_type
    assert (form.boundary is not None) is multipart


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        (None, "application/dicom+json"),
        ("*/*", "application/dicom+json"),
        ("application/dicom+xml", "application/dicom+xml"),
        ("application/dicom+json;q=0.5, application/dicom+xml", "application/dicom+xml"),
        ("application/*", "application/dicom+json"),
        ("text/html", None),
        ("application/dicom+json;q=0", None),
    ],
    ids=["none", "any", "xml", "xml-preferred", "application-any", "html", "json-refused"],
)
def test_response_media_type(accept: str | None, chosen: str | None) -> None:
    if chosen is None:
        with pytest.raises(TesseraError) as caught:
            response_media_type(accept)
        assert caught.value.code is ErrorCode.NOT_ACCEPTABLE
    else:
        assert response_media_type(accept) == chosen


JSON = "application/dicom+json"
PARTS = {
    "metadata-typed": ({"content-type": JSON}, JSON, "metadata", None),
    "metadata-untyped": ({}, JSON, "metadata", None),
    "bulk-octets": (
        {"content-type": "application/octet-stream", "content-location": "urn:1"},
        JSON,
        "bulk",
        None,
    ),
    "bulk-jpeg-with-syntax": (
        {
            "content-type": "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50",
            "content-location": "u",
        },
        JSON,
        "bulk",
        None,
    ),
    "bulk-without-location": ({"content-type": "image/jp2"}, JSON, "bulk", "Content-Location"),
    "dicom-part-in-json-request": (
        {"content-type": "application/dicom"},
        JSON,
        "metadata",
        "not accepted",
    ),
    "bulk-in-dicom-request": (
        {"content-type": "image/jpeg"},
        "application/dicom",
        "instance",
        "not accepted",
    ),
    "bad-content-length": ({"content-length": "12x"}, JSON, "metadata", "Content-Length"),
    "xml-part-in-json-request": (
        {"content-type": "application/dicom+xml"},
        JSON,
        "metadata",
        "not accepted",
    ),
}


@pytest.mark.parametrize("case", sorted(PARTS), ids=sorted(PARTS))
def test_part_classification(case: str) -> None:
    headers, part_type, role, refusal = PARTS[case]
    part = describe_part(0, headers, part_type)
    assert part.role == role
    if refusal is None:
        assert part.refusal is None
    else:
        assert part.refusal is not None and refusal in part.refusal


def test_transfer_syntax_parameter_is_kept() -> None:
    part = describe_part(
        0,
        {
            "content-type": "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50",
            "content-location": "u",
        },
        JSON,
    )
    assert (part.media_type, part.transfer_syntax, part.content_location) == (
        "image/jpeg",
        "1.2.840.10008.1.2.4.50",
        "u",
    )


def test_shared_testdata_is_there() -> None:
    assert Path(SHARED_TESTDATA / ROUND_TRIPS["pdf"]).is_file()


def test_largest_assemble_reply_fits_in_a_nats_message() -> None:
    uid = "1." + "2" * 62
    outcome = InstanceOutcome(
        stored=True,
        sop_class_uid=uid,
        sop_instance_uid=uid,
        study_uid=uid,
        series_uid=uid,
        warning_reason=0xB000,
        reason="x" * 400,
        original_attributes=[_original_attributes_item()],
    )
    reply = AssembleReply(
        outcomes=[outcome] * MAX_ASSEMBLE_DATASETS, referenced=list(range(10_000))
    )
    assert len(reply.model_dump_json()) < 1024 * 1024
