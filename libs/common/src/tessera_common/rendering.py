"""Rendering query parameters (PS3.18 §8.3.5.1), parsed once into a frozen value.

The gateway parses a ``/rendered`` or ``/thumbnail`` request's query into ``RenderParams``
(a bad value is a 400 with a reason, PS3.18 §8.3.5.1); the value travels to a render worker
inside the ``render.frame`` message and names the cached result (``cache_name``), so two
requests that mean the same thing share one rendered image.

Deviations we document in docs/CONFORMANCE.md: the window function may be left out (it then
is ``linear``) and is also accepted in the VOI LUT Function spelling (``linear_exact``);
``quality`` is ignored for the lossless PNG and GIF; query keys this table does not name are
ignored, as viewers add their own cache-busting keys.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict

from .errors import ErrorCode, TesseraError

MediaType = Literal["image/jpeg", "image/png", "image/gif"]
#: Rendered media types (PS3.18 §8.7.4, Table 8.7.4-1) in the order we prefer them.
RENDERED_MEDIA_TYPES: tuple[MediaType, ...] = ("image/jpeg", "image/png", "image/gif")

VoiFunction = Literal["LINEAR", "LINEAR_EXACT", "SIGMOID"]
#: ``window`` functions (PS3.18 §8.3.5.1.4) → VOI LUT Function terms (PS3.3 §C.11.2.1.3).
WINDOW_FUNCTIONS: dict[str, VoiFunction] = {
    "linear": "LINEAR",
    "linear-exact": "LINEAR_EXACT",
    "linear_exact": "LINEAR_EXACT",
    "sigmoid": "SIGMOID",
}

IccProfile = Literal["no", "yes", "srgb", "adobergb", "rommrgb", "displayp3"]
ICC_PROFILES: tuple[IccProfile, ...] = ("no", "yes", "srgb", "adobergb", "rommrgb", "displayp3")

Annotation = Literal["patient", "technique"]
ANNOTATIONS: tuple[Annotation, ...] = ("patient", "technique")

#: The largest viewport side we render: a 16k x 16k RGB image is 768 MiB of pixels.
MAX_VIEWPORT = 8192
#: JPEG quality when the request names none.
DEFAULT_QUALITY = 90
#: Side of the square a thumbnail fits into when the request names no viewport.
THUMBNAIL_SIDE = 128

#: The query keys the rendered resources understand (PS3.18 Table 8.3.5-1).
RENDERED_KEYS = frozenset(
    {"accept", "annotation", "charset", "quality", "viewport", "window", "iccprofile"}
)
#: Thumbnails take only these: the server chooses everything else (PS3.18 §10.4).
THUMBNAIL_KEYS = frozenset({"accept", "charset", "viewport"})


class Window(BaseModel):
    """A VOI window: centre and width in modality values, and the function (PS3.3 C.11.2.1.2)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    center: float
    width: float
    function: VoiFunction = "LINEAR"


class Viewport(BaseModel):
    """``viewport=vw,vh[,sx,sy,sw,sh]`` (PS3.18 §8.3.5.1.3): the output size and the source
    region. ``sx``/``sy`` default to 0, ``sw``/``sh`` to the rest of the image; a negative
    ``sw``/``sh`` flips the region.

    WADO-URI (PS3.18 §9.1.2.1.7-9) may give only ``rows`` or ``columns`` (``vh`` or ``vw``
    alone: the other side follows the aspect ratio, None for both: the region's own size) and
    its ``region`` as fractions of the image (``x1,y1,x2,y2``, from 0.0 to 1.0)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    vw: int | None
    vh: int | None
    sx: int | None = None
    sy: int | None = None
    sw: int | None = None
    sh: int | None = None
    fraction: tuple[float, float, float, float] | None = None

    @property
    def has_region(self) -> bool:
        return any(value is not None for value in (self.sx, self.sy, self.sw, self.sh))


class RenderParams(BaseModel):
    """Everything that decides a rendered image's bytes, besides the source pixels."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    media_type: MediaType = "image/jpeg"
    window: Window | None = None
    viewport: Viewport | None = None
    quality: int = DEFAULT_QUALITY
    iccprofile: IccProfile = "no"
    annotation: tuple[Annotation, ...] = ()
    charset: str | None = None
    thumbnail: bool = False

    def cache_name(self) -> str:
        """A short stable name for these parameters (part of a cached result's key)."""
        canonical = self.model_dump_json(exclude_defaults=False)
        return hashlib.sha256(canonical.encode()).hexdigest()[:24]


def _bad(reason: str) -> TesseraError:
    return TesseraError(ErrorCode.BAD_REQUEST, reason)


def _number(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _bad(f"{name} must be a decimal number, not {text[:32]!r}") from None
    if not math.isfinite(value):
        raise _bad(f"{name} must be a finite number")
    return value


def _integer(text: str, name: str) -> int:
    stripped = text.strip()
    body = stripped[1:] if stripped[:1] in "+-" else stripped
    if not body.isdigit() or len(body) > 9:
        raise _bad(f"{name} must be an integer, not {text[:32]!r}")
    return int(stripped)


def parse_window(text: str) -> Window:
    """``window=center,width[,function]`` (PS3.18 §8.3.5.1.4)."""
    parts = [part.strip() for part in text.split(",")]
    if len(parts) not in (2, 3):
        raise _bad("window must be center,width,function (e.g. window=40,400,linear)")
    center = _number(parts[0], "the window center")
    width = _number(parts[1], "the window width")
    function: VoiFunction = "LINEAR"
    if len(parts) == 3:
        name = parts[2].lower()
        if name not in WINDOW_FUNCTIONS:
            raise _bad("the window function must be linear, linear-exact or sigmoid")
        function = WINDOW_FUNCTIONS[name]
    # PS3.3 C.11.2.1.2: width >= 1 for LINEAR, > 0 for LINEAR_EXACT and SIGMOID.
    if (function == "LINEAR" and width < 1) or width <= 0:
        limit = "at least 1" if function == "LINEAR" else "greater than 0"
        raise _bad(f"the window width must be {limit} for the {function.lower()} function")
    return Window(center=center, width=width, function=function)


def parse_viewport(text: str) -> Viewport:
    """``viewport=vw,vh[,sx,sy,sw,sh]`` (PS3.18 §8.3.5.1.3); empty region values default."""
    parts = [part.strip() for part in text.split(",")]
    if len(parts) not in (2, 6):
        raise _bad("viewport must be vw,vh or vw,vh,sx,sy,sw,sh")
    vw, vh = (_integer(part, name) for part, name in zip(parts[:2], ("vw", "vh"), strict=True))
    if not (0 < vw <= MAX_VIEWPORT and 0 < vh <= MAX_VIEWPORT):
        raise _bad(f"the viewport width and height must be between 1 and {MAX_VIEWPORT}")
    if len(parts) == 2:
        return Viewport(vw=vw, vh=vh)
    names = ("sx", "sy", "sw", "sh")
    region = [
        None if not part else _integer(part, name)
        for part, name in zip(parts[2:], names, strict=True)
    ]
    sx, sy, sw, sh = region
    if (sx is not None and sx < 0) or (sy is not None and sy < 0):
        raise _bad("the viewport's sx and sy must not be negative")
    if sw == 0 or sh == 0:
        raise _bad("the viewport's sw and sh must not be 0")
    return Viewport(vw=vw, vh=vh, sx=sx, sy=sy, sw=sw, sh=sh)


def parse_quality(text: str) -> int:
    quality = _integer(text, "quality")
    if not 1 <= quality <= 100:
        raise _bad("quality must be between 1 and 100")
    return quality


def parse_iccprofile(text: str) -> IccProfile:
    name = text.strip().lower()
    for profile in ICC_PROFILES:
        if profile == name:
            return profile
    raise _bad("iccprofile must be one of " + ", ".join(ICC_PROFILES))


def parse_annotation(text: str) -> tuple[Annotation, ...]:
    chosen: list[Annotation] = []
    for word in (part.strip().lower() for part in text.split(",")):
        match = next((name for name in ANNOTATIONS if name == word), None)
        if match is None:
            raise _bad("annotation must be patient and/or technique")
        if match not in chosen:
            chosen.append(match)
    return tuple(sorted(chosen))


def parse_charset(text: str) -> str:
    name = text.strip().lower()
    if not name or len(name) > 40 or not all(ch.isalnum() or ch in "-_.:" for ch in name):
        raise _bad("charset must be a character set token such as utf-8")
    return name


def parse_render_query(
    query: Mapping[str, str], media_type: MediaType, *, thumbnail: bool = False
) -> RenderParams:
    """The parameters of one rendered (or thumbnail) request; ``media_type`` has been
    negotiated already (``accept`` query parameter or Accept header). Raises a 400
    ``TesseraError`` naming the first bad parameter."""
    allowed = THUMBNAIL_KEYS if thumbnail else RENDERED_KEYS
    for key in RENDERED_KEYS - allowed:
        if key in query:
            raise _bad(f"{key} is not a thumbnail parameter: a thumbnail takes viewport only")
    fields: dict[str, object] = {"media_type": media_type, "thumbnail": thumbnail}
    if "window" in query:
        fields["window"] = parse_window(query["window"])
    if "viewport" in query:
        fields["viewport"] = parse_viewport(query["viewport"])
    elif thumbnail:
        fields["viewport"] = Viewport(vw=THUMBNAIL_SIDE, vh=THUMBNAIL_SIDE)
    if "quality" in query:
        fields["quality"] = parse_quality(query["quality"])
    if "iccprofile" in query:
        fields["iccprofile"] = parse_iccprofile(query["iccprofile"])
    if "annotation" in query:
        fields["annotation"] = parse_annotation(query["annotation"])
    if "charset" in query:
        fields["charset"] = parse_charset(query["charset"])
    return RenderParams.model_validate(fields)
