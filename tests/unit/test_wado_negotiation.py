"""WADO-RS negotiation: Accept → wishes → plans per stored instance (PS3.18 §8.7.3)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tessera_gateway.negotiation import parse_accept
from tessera_gateway.transfer_syntax import (
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    STORED,
    Capabilities,
    Kind,
    Plan,
    bulk_plans,
    instance_plans,
    wishes,
)

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.70"
JPEG_LS = "1.2.840.10008.1.2.4.80"
J2K = "1.2.840.10008.1.2.4.90"
HTJ2K = "1.2.840.10008.1.2.4.201"
RLE = "1.2.840.10008.1.2.5"
H264 = "1.2.840.10008.1.2.4.102"
DECODE = frozenset({EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN, JPEG_BASELINE,
                    JPEG_LOSSLESS, JPEG_LS, J2K, HTJ2K, RLE, EXPLICIT_VR_BIG_ENDIAN})  # fmt: skip
ENCODE = frozenset({EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN, JPEG_BASELINE, JPEG_LS,
                    J2K, HTJ2K, RLE})  # fmt: skip
CAPS = Capabilities(DECODE, ENCODE)
DICOM_ANY = 'multipart/related; type="application/dicom"; transfer-syntax=*'


@dataclass(frozen=True)
class InstanceCase:
    id: str
    accept: str | None
    stored: str
    plans: list[tuple[str, str]]  # (target, label)
    kind: Kind = Kind.DICOM


INSTANCE_CASES = [
    InstanceCase("transfer-syntax=* sends what is stored", DICOM_ANY, JPEG_LS, [(STORED, JPEG_LS)]),
    InstanceCase(
        "no transfer-syntax: Explicit VR Little Endian (PS3.18 §8.7.3.5.2)",
        'multipart/related; type="application/dicom"',
        JPEG_LS,
        [(EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN)],
    ),
    InstanceCase(
        "no Accept header: the default media type and syntax",
        None,
        IMPLICIT_VR_LITTLE_ENDIAN,
        [(EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN)],
    ),
    InstanceCase(
        "default on Explicit VR Little Endian is the stored bytes",
        None,
        EXPLICIT_VR_LITTLE_ENDIAN,
        [(STORED, EXPLICIT_VR_LITTLE_ENDIAN)],
    ),
    InstanceCase(
        "undecodable video falls back to the stored bytes for the default only",
        'multipart/related; type="application/dicom"',
        H264,
        [(STORED, H264)],
    ),
    InstanceCase(
        "undecodable video asked for in another syntax: nothing",
        f'multipart/related; type="application/dicom"; transfer-syntax={JPEG_LS}',
        H264,
        [],
    ),
    InstanceCase(
        "the client's order is kept, with a fallback",
        f'multipart/related; type="application/dicom"; transfer-syntax={JPEG_BASELINE}, '
        f"{DICOM_ANY};q=0.5",
        JPEG_LOSSLESS,
        [(JPEG_BASELINE, JPEG_BASELINE), (STORED, JPEG_LOSSLESS)],
    ),
    InstanceCase(
        "equal q: the stored bytes before a transcode (RFC 9110 §12.5.1)",
        f'multipart/related; type="application/dicom"; transfer-syntax={JPEG_BASELINE}, '
        f"{DICOM_ANY}",
        JPEG_LOSSLESS,
        [(STORED, JPEG_LOSSLESS), (JPEG_BASELINE, JPEG_BASELINE)],
    ),
    InstanceCase(
        "a syntax the codec cannot encode is not planned",
        'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.91',
        JPEG_LS,
        [],
    ),
    InstanceCase(
        "the accept of q=0 is ignored",
        f"{DICOM_ANY};q=0, multipart/related; type=application/dicom",
        JPEG_LS,
        [(EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN)],
    ),
    InstanceCase(
        "application/zip with a transfer syntax",
        f"application/zip; transfer-syntax={J2K}",
        JPEG_LS,
        [(J2K, J2K)],
        Kind.ZIP,
    ),
]


@pytest.mark.parametrize("case", INSTANCE_CASES, ids=lambda c: c.id)
def test_instance_plans(case: InstanceCase) -> None:
    wanted = wishes(parse_accept(case.accept))
    assert wanted and wanted[0].kind is case.kind
    same = [w for w in wanted if w.kind is case.kind]
    plans = instance_plans(same, case.stored, CAPS)
    assert [(p.target, p.label) for p in plans] == case.plans


def test_unknown_capabilities_still_plan_transcodes() -> None:
    wanted = wishes(
        parse_accept(f'multipart/related; type="application/dicom"; transfer-syntax={RLE}')
    )
    plans = instance_plans(wanted, JPEG_LS, Capabilities(None, None))
    assert [p.target for p in plans] == [RLE]


@pytest.mark.parametrize(
    ("accept", "kind"),
    [
        pytest.param("application/json", None, id="json is not an instance representation"),
        pytest.param('multipart/related; type="application/dicom+xml"', None, id="xml parts"),
        pytest.param("*/*", Kind.DICOM, id="anything: DICOM first"),
        pytest.param("application/*", Kind.ZIP, id="application/* covers zip"),
        pytest.param('multipart/related; type="image/jpeg"', Kind.BULK, id="bulk media type"),
    ],
)
def test_wish_kinds(accept: str, kind: Kind | None) -> None:
    wanted = wishes(parse_accept(accept))
    assert (wanted[0].kind if wanted else None) is kind


@dataclass(frozen=True)
class BulkCase:
    id: str
    accept: str
    stored: str
    plans: list[Plan]
    servable: bool = True


OCTET = "application/octet-stream"
#: What dicom-microscopy-viewer (as OHIF 3.13.2 bundles it) sends for every tile.
DMV_TILE_ACCEPT = ", ".join(
    f'multipart/related; type="{media}"; transfer-syntax={ts}'
    for media, ts in [
        ("image/jls", JPEG_LS),
        ("image/jls", "1.2.840.10008.1.2.4.81"),
        ("image/jp2", J2K),
        ("image/jp2", "1.2.840.10008.1.2.4.91"),
        ("image/jpx", "1.2.840.10008.1.2.4.92"),
        ("image/jpx", "1.2.840.10008.1.2.4.93"),
        (OCTET, "*"),
        ("image/jpeg", JPEG_BASELINE),
    ]
)
BULK_CASES = [
    BulkCase(
        "native frames as stored",
        f'multipart/related; type="{OCTET}"; transfer-syntax=*',
        EXPLICIT_VR_LITTLE_ENDIAN,
        [Plan(STORED, EXPLICIT_VR_LITTLE_ENDIAN, OCTET)],
    ),
    BulkCase(
        "implicit VR frames are labelled Explicit VR Little Endian (same bytes)",
        f'multipart/related; type="{OCTET}"',
        IMPLICIT_VR_LITTLE_ENDIAN,
        [Plan(STORED, EXPLICIT_VR_LITTLE_ENDIAN, OCTET)],
    ),
    BulkCase(
        "compressed frames as octet-stream are decoded",
        f'multipart/related; type="{OCTET}"',
        JPEG_LS,
        [Plan(EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN, OCTET)],
    ),
    BulkCase(
        "*/* prefers the stored frames, then native",
        'multipart/related; type="*/*"',
        JPEG_LS,
        [
            Plan(STORED, JPEG_LS, "image/jls"),
            Plan(EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN, OCTET),
        ],
    ),
    BulkCase(
        "image/jpeg without a syntax: JPEG Baseline, then the stored JPEG",
        'multipart/related; type="image/jpeg"',
        JPEG_LOSSLESS,
        [
            Plan(JPEG_BASELINE, JPEG_BASELINE, "image/jpeg"),
            Plan(STORED, JPEG_LOSSLESS, "image/jpeg"),
        ],
    ),
    BulkCase(
        "image/jls from native: encoded",
        'multipart/related; type="image/jls"',
        EXPLICIT_VR_LITTLE_ENDIAN,
        [Plan(JPEG_LS, JPEG_LS, "image/jls")],
    ),
    BulkCase(
        "image/jphc with a named syntax",
        f'multipart/related; type="image/jphc"; transfer-syntax={HTJ2K}',
        RLE,
        [Plan(HTJ2K, HTJ2K, "image/jphc")],
    ),
    BulkCase(
        "single-part image/jls",
        "image/jls",
        JPEG_LS,
        [Plan(STORED, JPEG_LS, "image/jls", multipart=False)],
    ),
    BulkCase(
        "stored frames that cannot be addressed are decoded instead",
        f'multipart/related; type="{OCTET}"; transfer-syntax=*',
        EXPLICIT_VR_LITTLE_ENDIAN,
        [Plan(EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN, OCTET)],
        servable=False,
    ),
    BulkCase(
        "dicom-microscopy-viewer's tile Accept: the stored JPEG, transcodes after",
        DMV_TILE_ACCEPT,
        JPEG_BASELINE,
        [
            Plan(STORED, JPEG_BASELINE, "image/jpeg"),
            Plan(JPEG_LS, JPEG_LS, "image/jls"),
            Plan(J2K, J2K, "image/jp2"),
            Plan(EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN, OCTET),
        ],
    ),
    BulkCase(
        "equal q: the stored syntax named by a later item comes first",
        f'multipart/related; type="image/jls", multipart/related; type="image/jpeg"; '
        f"transfer-syntax={JPEG_BASELINE}",
        JPEG_BASELINE,
        [Plan(STORED, JPEG_BASELINE, "image/jpeg"), Plan(JPEG_LS, JPEG_LS, "image/jls")],
    ),
    BulkCase(
        "a higher q still wins over the stored bytes",
        'multipart/related; type="image/jls", multipart/related; type="image/jpeg";q=0.9',
        JPEG_BASELINE,
        [Plan(JPEG_LS, JPEG_LS, "image/jls"), Plan(STORED, JPEG_BASELINE, "image/jpeg")],
    ),
    BulkCase(
        "a fallback to another syntax of the media type is not promoted",
        'multipart/related; type="image/jls", multipart/related; type="image/jpeg"',
        JPEG_LOSSLESS,
        [
            Plan(JPEG_LS, JPEG_LS, "image/jls"),
            Plan(JPEG_BASELINE, JPEG_BASELINE, "image/jpeg"),
            Plan(STORED, JPEG_LOSSLESS, "image/jpeg"),
        ],
    ),
    BulkCase(
        "a syntax of another media type is not planned",
        f'multipart/related; type="image/jpeg"; transfer-syntax={JPEG_LS}',
        EXPLICIT_VR_LITTLE_ENDIAN,
        [],
    ),
]


@pytest.mark.parametrize("case", BULK_CASES, ids=lambda c: c.id)
def test_bulk_plans(case: BulkCase) -> None:
    wanted = wishes(parse_accept(case.accept), bulk_only=True)
    plans = bulk_plans(wanted, case.stored, CAPS, stored_servable=case.servable)
    assert plans == case.plans
