"""Encoding rendered images (PS3.18 §8.7.4 rendered media types).

- ``image/jpeg``: baseline 8-bit JPEG at the request's ``quality`` (PS3.18 §8.3.5.1.1);
  colour is subsampled 4:2:0 unless quality ≥ 95 (then 4:4:4).
- ``image/png``: 8-bit greyscale or RGB.
- ``image/gif``: one image, or an animation that loops for several frames, with each
  frame's display time (GIF counts in 1/100 s); colour is quantised to a 256-colour palette
  per frame. Pillow merges consecutive identical frames into one longer frame.

The ICC profile, if any, is embedded in JPEG (APP2) and PNG (iCCP); GIF has no place for it
in Pillow, so a GIF carries transformed pixels but no profile.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image

from tessera_common.rendering import MediaType

#: Quality from which colour JPEGs keep full chroma resolution.
FULL_CHROMA_QUALITY = 95
#: zlib level of PNG output: level 6 costs ~2x the time for a few per cent of size.
PNG_COMPRESS_LEVEL = 3


def encode(
    images: Sequence[Image.Image],
    media_type: MediaType,
    quality: int,
    icc_profile: bytes | None,
    durations_ms: Sequence[float] = (),
) -> bytes:
    out = io.BytesIO()
    first = images[0]
    if media_type == "image/jpeg":
        options: dict[str, object] = {"quality": quality}
        if first.mode == "RGB":
            options["subsampling"] = 0 if quality >= FULL_CHROMA_QUALITY else 2
        if icc_profile:
            options["icc_profile"] = icc_profile
        first.save(out, format="JPEG", **options)
    elif media_type == "image/png":
        png_options: dict[str, object] = {"compress_level": PNG_COMPRESS_LEVEL}
        if icc_profile:
            png_options["icc_profile"] = icc_profile
        first.save(out, format="PNG", **png_options)
    else:
        frames = [_gif_frame(image) for image in images]
        gif_options: dict[str, object] = {}
        if len(frames) > 1:
            durations = list(durations_ms) or [100.0] * len(frames)
            gif_options = {
                "save_all": True,
                "append_images": frames[1:],
                "duration": [max(10, round(d)) for d in durations],
                "loop": 0,
            }
        frames[0].save(out, format="GIF", **gif_options)
    return out.getvalue()


def _gif_frame(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image.quantize(colors=256, method=Image.Quantize.FASTOCTREE)
    return image
