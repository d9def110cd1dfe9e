"""The viewport (PS3.18 §8.3.5.1.3): ``viewport=vw,vh[,sx,sy,sw,sh]``.

The source region starts at column ``sx``, row ``sy`` (default 0) and spans ``|sw|``
columns and ``|sh|`` rows (default: to the right and bottom edges); a negative ``sw``
(``sh``) mirrors the region left-right (top-bottom). The region is clipped to the image and
scaled, preserving its aspect ratio, to the largest size that fits in ``vw`` x ``vh``: the
output is at most the viewport, never padded. Without a viewport the image keeps its size.

Resampling is Lanczos (Pillow, with a box pre-reduction for strong downscaling:
``reducing_gap``); a region shown at its own size is only cropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from tessera_common.rendering import Viewport


class ViewportError(ValueError):
    """The viewport asks for a region outside the image."""


@dataclass(frozen=True, slots=True)
class Placement:
    """The clipped source box (left, top, right, bottom), mirroring, and the output size."""

    box: tuple[int, int, int, int]
    mirror_x: bool
    mirror_y: bool
    size: tuple[int, int]


def placement(columns: int, rows: int, viewport: Viewport | None) -> Placement:
    if viewport is None:
        return Placement((0, 0, columns, rows), False, False, (columns, rows))
    if viewport.fraction is not None:
        viewport = _in_pixels(columns, rows, viewport)
    sx = viewport.sx or 0
    sy = viewport.sy or 0
    sw = viewport.sw if viewport.sw is not None else columns - sx
    sh = viewport.sh if viewport.sh is not None else rows - sy
    left, right = max(0, sx), min(columns, sx + abs(sw))
    top, bottom = max(0, sy), min(rows, sy + abs(sh))
    if right <= left or bottom <= top:
        raise ViewportError(
            f"the viewport region lies outside the {columns}x{rows} image (PS3.18 §8.3.5.1.3)"
        )
    width, height = right - left, bottom - top
    vw, vh = viewport.vw, viewport.vh
    scales = [side / length for side, length in ((vw, width), (vh, height)) if side is not None]
    scale = min(scales) if scales else 1.0
    size = (
        max(1, min(vw or width * scale, round(width * scale))),
        max(1, min(vh or height * scale, round(height * scale))),
    )
    return Placement((left, top, right, bottom), sw < 0, sh < 0, (int(size[0]), int(size[1])))


def _in_pixels(columns: int, rows: int, viewport: Viewport) -> Viewport:
    """A WADO-URI ``region`` (fractions of the image, PS3.18 §9.1.2.1.9) in pixels."""
    assert viewport.fraction is not None
    x1, y1, x2, y2 = viewport.fraction
    left, top = int(x1 * columns), int(y1 * rows)
    right, bottom = max(left + 1, round(x2 * columns)), max(top + 1, round(y2 * rows))
    return viewport.model_copy(
        update={"sx": left, "sy": top, "sw": right - left, "sh": bottom - top, "fraction": None}
    )


def apply_viewport(image: Image.Image, viewport: Viewport | None) -> Image.Image:
    place = placement(image.width, image.height, viewport)
    left, top, right, bottom = place.box
    if place.size == (right - left, bottom - top):
        if place.box != (0, 0, image.width, image.height):
            image = image.crop(place.box)
    else:
        image = image.resize(place.size, Image.Resampling.LANCZOS, box=place.box, reducing_gap=2.0)
    if place.mirror_x:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if place.mirror_y:
        image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    return image
