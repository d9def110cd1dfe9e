"""Rendering query parameters (PS3.18 §8.3.5.1) → RenderParams, and the cache keys they name."""

from __future__ import annotations

import pytest

from tessera_common.errors import TesseraError
from tessera_common.rendering import (
    THUMBNAIL_SIDE,
    RenderParams,
    Viewport,
    Window,
    parse_render_query,
)
from tessera_render.layout import rendered_key

SHA = "ab" * 32

GOOD: list[tuple[str, dict[str, str], RenderParams]] = [
    ("nothing", {}, RenderParams()),
    (
        "window-linear",
        {"window": "40,400,linear"},
        RenderParams(window=Window(center=40, width=400)),
    ),
    (
        "window-no-function",
        {"window": "-600,1500"},
        RenderParams(window=Window(center=-600, width=1500)),
    ),
    (
        "window-linear-exact",
        {"window": "40.5,0.5,linear-exact"},
        RenderParams(window=Window(center=40.5, width=0.5, function="LINEAR_EXACT")),
    ),
    (
        "window-voi-spelling",
        {"window": "40,400,LINEAR_EXACT"},
        RenderParams(window=Window(center=40, width=400, function="LINEAR_EXACT")),
    ),
    (
        "window-sigmoid",
        {"window": "40, 400, Sigmoid"},
        RenderParams(window=Window(center=40, width=400, function="SIGMOID")),
    ),
    ("viewport", {"viewport": "256,128"}, RenderParams(viewport=Viewport(vw=256, vh=128))),
    (
        "viewport-region",
        {"viewport": "256,256,10,20,100,-100"},
        RenderParams(viewport=Viewport(vw=256, vh=256, sx=10, sy=20, sw=100, sh=-100)),
    ),
    (
        "viewport-region-defaults",
        {"viewport": "64,64,,,50,"},
        RenderParams(viewport=Viewport(vw=64, vh=64, sw=50)),
    ),
    ("quality", {"quality": "55"}, RenderParams(quality=55)),
    ("iccprofile", {"iccprofile": "AdobeRGB"}, RenderParams(iccprofile="adobergb")),
    (
        "annotation-sorted-unique",
        {"annotation": "technique,patient,technique"},
        RenderParams(annotation=("patient", "technique")),
    ),
    ("charset", {"charset": "UTF-8"}, RenderParams(charset="utf-8")),
    ("unknown-keys-ignored", {"_": "12345", "cachebust": "x"}, RenderParams()),
]


@pytest.mark.parametrize(("query", "expected"), [g[1:] for g in GOOD], ids=[g[0] for g in GOOD])
def test_good_parameters_parse(query: dict[str, str], expected: RenderParams) -> None:
    assert parse_render_query(query, "image/jpeg") == expected


BAD: list[tuple[str, dict[str, str], str]] = [
    ("window-one-value", {"window": "40"}, "center,width"),
    ("window-four-values", {"window": "1,2,linear,4"}, "center,width"),
    ("window-not-number", {"window": "abc,400"}, "decimal"),
    ("window-nan", {"window": "nan,400"}, "finite"),
    ("window-inf", {"window": "40,inf"}, "finite"),
    ("window-width-zero-linear", {"window": "40,0.5,linear"}, "at least 1"),
    ("window-width-zero-sigmoid", {"window": "40,0,sigmoid"}, "greater than 0"),
    ("window-bad-function", {"window": "40,400,cubic"}, "function"),
    ("viewport-one-value", {"viewport": "256"}, "vw,vh"),
    ("viewport-four-values", {"viewport": "1,2,3,4"}, "vw,vh"),
    ("viewport-zero", {"viewport": "0,256"}, "between 1"),
    ("viewport-huge", {"viewport": "100000,256"}, "between 1"),
    ("viewport-negative-size", {"viewport": "-5,256"}, "between 1"),
    ("viewport-float", {"viewport": "25.5,256"}, "integer"),
    ("viewport-negative-origin", {"viewport": "64,64,-1,0,10,10"}, "sx and sy"),
    ("viewport-zero-region", {"viewport": "64,64,0,0,0,10"}, "sw and sh"),
    ("viewport-long-number", {"viewport": "1,1,1,1,1234567890123,1"}, "integer"),
    ("quality-zero", {"quality": "0"}, "between 1 and 100"),
    ("quality-101", {"quality": "101"}, "between 1 and 100"),
    ("quality-text", {"quality": "best"}, "integer"),
    ("iccprofile-unknown", {"iccprofile": "cmyk"}, "iccprofile"),
    ("annotation-unknown", {"annotation": "patient,dose"}, "annotation"),
    ("annotation-empty", {"annotation": ""}, "annotation"),
    ("charset-garbage", {"charset": "utf 8; drop"}, "charset"),
]


@pytest.mark.parametrize(("query", "words"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_parameters_are_400_with_a_reason(query: dict[str, str], words: str) -> None:
    with pytest.raises(TesseraError) as caught:
        parse_render_query(query, "image/png")
    assert caught.value.code.value == "bad-request"
    assert words in caught.value.reason


@pytest.mark.parametrize("key", ["window", "quality", "iccprofile", "annotation"])
def test_thumbnails_take_only_a_viewport(key: str) -> None:
    value = {"window": "1,2", "quality": "5", "iccprofile": "no", "annotation": "patient"}[key]
    with pytest.raises(TesseraError, match="thumbnail"):
        parse_render_query({key: value}, "image/jpeg", thumbnail=True)


def test_a_thumbnail_has_a_default_viewport() -> None:
    params = parse_render_query({}, "image/jpeg", thumbnail=True)
    assert params.viewport == Viewport(vw=THUMBNAIL_SIDE, vh=THUMBNAIL_SIDE)
    assert params.thumbnail


def test_cache_names_are_stable_and_distinguish_parameters() -> None:
    a = parse_render_query({"window": "40,400"}, "image/jpeg")
    same = parse_render_query({"window": "40.0,400,linear"}, "image/jpeg")
    png = parse_render_query({"window": "40,400"}, "image/png")
    other = parse_render_query({"window": "41,400"}, "image/jpeg")
    assert a.cache_name() == same.cache_name()
    assert len({a.cache_name(), png.cache_name(), other.cache_name()}) == 3


def test_rendered_keys() -> None:
    params = RenderParams(media_type="image/png")
    key = rendered_key(SHA, [3], params)
    assert key == f"derived/{SHA}/rendered/{params.cache_name()}/3.png"
    long_key = rendered_key(SHA, list(range(1, 100)), RenderParams(media_type="image/gif"))
    assert long_key.endswith(".gif") and len(long_key) < 200
    with pytest.raises(ValueError, match="SHA-256"):
        rendered_key("../../etc", [1], params)
    with pytest.raises(ValueError, match="start at 1"):
        rendered_key(SHA, [0], params)
