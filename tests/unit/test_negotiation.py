"""Content negotiation on ``Accept`` (RFC 9110 §12.5.1, PS3.18 §8.7)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from tessera_gateway.mediatype import MediaTypeError, parse_media_range
from tessera_gateway.negotiation import (
    AcceptItem,
    choose,
    matching,
    parse_accept,
    quality,
)

DICOM_MULTIPART = 'multipart/related; type="application/dicom"'


@dataclass(frozen=True)
class AcceptCase:
    id: str
    header: str | None
    items: list[tuple[str, float]]  # (str(media_type), q), best first


ACCEPT_HEADERS = [
    AcceptCase("no header accepts anything", None, [("*/*", 1.0)]),
    AcceptCase("empty header accepts anything", "", [("*/*", 1.0)]),
    AcceptCase("blank header accepts anything", "  \t", [("*/*", 1.0)]),
    AcceptCase("one type", "application/dicom+json", [("application/dicom+json", 1.0)]),
    AcceptCase(
        "sorted by q, stable for equal q",
        "text/html;q=0.5, application/json, image/*;q=0.5, */*;q=0.1, application/xml",
        [
            ("application/json", 1.0),
            ("application/xml", 1.0),
            ("text/html", 0.5),
            ("image/*", 0.5),
            ("*/*", 0.1),
        ],
    ),
    AcceptCase(
        "q=0 kept",
        "application/dicom;q=0, */*",
        [("*/*", 1.0), ("application/dicom", 0.0)],
    ),
    AcceptCase(
        "qvalue forms",
        "a/b;q=1.000, c/d;q=0.001, e/f;q=1., g/h;q=0",
        [("a/b", 1.0), ("e/f", 1.0), ("c/d", 0.001), ("g/h", 0.0)],
    ),
    AcceptCase(
        "DICOM parameters preserved, q removed",
        f"{DICOM_MULTIPART}; transfer-syntax=*; q=0.9",
        [('multipart/related; type="application/dicom"; transfer-syntax=*', 0.9)],
    ),
    AcceptCase(
        "comma inside a quoted value does not split",
        'multipart/related; type="a,b", text/plain',
        [('multipart/related; type="a,b"', 1.0), ("text/plain", 1.0)],
    ),
    AcceptCase(
        "case-insensitive names",
        "Application/DICOM; Q=0.5",
        [("application/dicom", 0.5)],
    ),
    AcceptCase(
        "invalid items skipped",
        "garbage, text/html;q=2, text/csv;q=abc, */json, image/png;q=0.7",
        [("image/png", 0.7)],
    ),
    AcceptCase(
        "unterminated quote swallows the rest of the header",
        'image/png;q=0.7, a/b;x="open, c/d',
        [("image/png", 0.7)],
    ),
    AcceptCase("empty list items skipped", " , ,application/json,, ", [("application/json", 1.0)]),
    AcceptCase("only invalid items", "garbage, ???", []),
]


@pytest.mark.parametrize("case", ACCEPT_HEADERS, ids=[case.id for case in ACCEPT_HEADERS])
def test_parse_accept(case: AcceptCase) -> None:
    items = parse_accept(case.header)
    assert [(str(item.media_type), item.q) for item in items] == case.items


def test_q_zero_is_not_acceptable() -> None:
    [excluded] = parse_accept("application/dicom;q=0")
    assert not excluded.acceptable
    assert excluded.matches("application", "dicom")


def test_dicom_parameters_are_available() -> None:
    [item] = parse_accept(f"{DICOM_MULTIPART}; transfer-syntax=1.2.840.10008.1.2.1")
    assert item.media_type.essence == "multipart/related"
    assert item.media_type.params == {
        "type": "application/dicom",
        "transfer-syntax": "1.2.840.10008.1.2.1",
    }


MATCHES = [
    ("*/*", "application", "dicom", True),
    ("application/*", "application", "dicom", True),
    ("application/*", "image", "jpeg", False),
    ("application/dicom", "application", "dicom", True),
    ("application/dicom", "APPLICATION", "DICOM", True),
    ("application/dicom", "application", "dicom+json", False),
    ("image/jpeg", "image", "png", False),
    (DICOM_MULTIPART, "multipart", "related", True),
]


@pytest.mark.parametrize(
    "media_range, type_, subtype, expected",
    MATCHES,
    ids=[f"{r} vs {t}/{s}" for r, t, s, _ in MATCHES],
)
def test_accept_item_matches(media_range: str, type_: str, subtype: str, expected: bool) -> None:
    assert AcceptItem(parse_media_range(media_range)).matches(type_, subtype) is expected


BAD_RANGES = [("type wildcard only", "*/json"), ("no slash", "*"), ("empty", "")]


@pytest.mark.parametrize("text", [t for _, t in BAD_RANGES], ids=[i for i, _ in BAD_RANGES])
def test_parse_media_range_rejects(text: str) -> None:
    with pytest.raises(MediaTypeError):
        parse_media_range(text)


@dataclass(frozen=True)
class ChooseCase:
    id: str
    accept: str | None
    offered: Sequence[str]
    chosen: str | None


CHOICES = [
    ChooseCase(
        "no Accept: first offered",
        None,
        ["application/dicom+json", "application/json"],
        "application/dicom+json",
    ),
    ChooseCase(
        "higher q wins",
        "application/dicom+json;q=0.5, application/json",
        ["application/dicom+json", "application/json"],
        "application/json",
    ),
    ChooseCase(
        "equal q: offered order breaks the tie",
        "application/json, application/dicom+json",
        ["application/dicom+json", "application/json"],
        "application/dicom+json",
    ),
    ChooseCase(
        "type wildcard",
        "image/*",
        ["application/dicom", "image/jpeg", "image/png"],
        "image/jpeg",
    ),
    ChooseCase(
        "specific q=0 overrides */*",
        "*/*, application/dicom;q=0",
        ["application/dicom", "application/octet-stream"],
        "application/octet-stream",
    ),
    ChooseCase(
        "specific range beats wildcard weight",
        "*/*;q=0.9, image/*;q=0.2, image/png",
        ["image/jpeg", "image/png", "text/plain"],
        "image/png",
    ),
    ChooseCase(
        "wildcard catches the rest",
        "*/*;q=0.1, image/*;q=0",
        ["image/jpeg", "text/plain"],
        "text/plain",
    ),
    ChooseCase(
        "DICOM parameters do not stop the essence matching",
        f"{DICOM_MULTIPART}; transfer-syntax=*",
        ["application/dicom+json", "multipart/related"],
        "multipart/related",
    ),
    ChooseCase(
        "offered compared case-insensitively",
        "application/dicom+json",
        ["Application/DICOM+JSON"],
        "Application/DICOM+JSON",
    ),
    ChooseCase(
        "nothing acceptable",
        "text/html",
        ["application/dicom+json", "application/json"],
        None,
    ),
    ChooseCase("everything refused", "*/*;q=0", ["application/json"], None),
    ChooseCase("nothing offered", "*/*", [], None),
    ChooseCase("only invalid items", "garbage", ["application/json"], None),
]


@pytest.mark.parametrize("case", CHOICES, ids=[case.id for case in CHOICES])
def test_choose(case: ChooseCase) -> None:
    assert choose(parse_accept(case.accept), case.offered) == case.chosen


QUALITIES = [
    ("*/*;q=0.3, application/*;q=0.6", "application/json", 0.6),
    ("*/*;q=0.3, application/*;q=0.6", "image/png", 0.3),
    ("application/json;q=0.2, application/json;q=0.4", "application/json", 0.4),
    ("text/html", "application/json", 0.0),
]


@pytest.mark.parametrize(
    "accept, essence, expected", QUALITIES, ids=[f"{a} -> {e}" for a, e, _ in QUALITIES]
)
def test_quality(accept: str, essence: str, expected: float) -> None:
    assert quality(parse_accept(accept), essence) == expected


def test_matching_orders_dicom_alternatives() -> None:
    accept = parse_accept(
        f"{DICOM_MULTIPART}; transfer-syntax=*;q=0.5, "
        f"{DICOM_MULTIPART}; transfer-syntax=1.2.840.10008.1.2.4.50, "
        "multipart/*;q=0.5, multipart/related;q=0, application/json"
    )
    found = matching(accept, "multipart/related")
    assert [item.media_type.params.get("transfer-syntax") for item in found] == [
        "1.2.840.10008.1.2.4.50",
        "*",
        None,
    ]
    assert [item.specificity for item in found] == [2, 2, 1]
