"""The rendering pipeline of one request (PS3.18 §8.3.5.1, PS3.4 §N.2), pure and synchronous.

decoded frame → stored values (mask/sign-extend) → greyscale: Modality LUT → VOI → Presentation
LUT (one 8-bit table per frame) | PALETTE COLOR: palette LUTs | colour: YBR → RGB, 8 bits →
viewport (region, mirroring, Lanczos scaling) → ICC (transform and profile) → annotation →
JPEG / PNG / GIF.

The ICC transform runs after the viewport: it maps each pixel independently, so on the
(usually smaller) output it costs less, and resampling happens on the encoded RGB values in
either order. The render service (``service.py``) decodes the frames and calls
``render_frames``; ``can_render`` lets it refuse an object before reading its pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pydicom
from PIL import Image

from tessera_codec.pixels import PixelDescription, can_decode
from tessera_common.rendering import RenderParams

from .annotation import annotate
from .cine import frame_durations
from .colour import COLOUR_INTERPRETATIONS, colour_to_rgb
from .encode import encode
from .functional_groups import FrameAttributes
from .greyscale import StoredFrame, render_greyscale, stored_frame
from .icc import IccError, manage_colour
from .modality import ModalityTransform, modality_transform
from .palette import PaletteError, apply_palette, palette_present, palette_tables
from .presentation import inverts
from .viewport import ViewportError, apply_viewport
from .windowing import VoiTransform, choose_voi

MONOCHROME = frozenset({"MONOCHROME1", "MONOCHROME2"})
PALETTE = "PALETTE COLOR"
#: Video transfer syntaxes (PS3.5 §8.2.5-8.2.8): served as video, not rendered as frames.
VIDEO_PREFIXES = ("1.2.840.10008.1.2.4.10", "1.2.840.10008.1.2.4.11")


class RenderError(ValueError):
    """The object cannot be rendered as asked; str() says why (→ 406 or 400)."""


@dataclass(frozen=True, slots=True)
class RenderedFrame:
    image: Image.Image
    attributes: FrameAttributes
    voi: VoiTransform | None


def can_render(header: pydicom.Dataset) -> str | None:
    """None if the object's frames can be rendered, else the reason they cannot."""
    if any(keyword not in header for keyword in ("Rows", "Columns", "BitsAllocated")):
        return "the object has no image pixel data (no Rows, Columns or Bits Allocated)"
    interpretation = str(header.get("PhotometricInterpretation", "") or "").strip()
    samples = int(header.get("SamplesPerPixel", 1) or 1)
    if interpretation in MONOCHROME or interpretation == PALETTE:
        if samples != 1:
            return f"{interpretation} pixel data must have 1 sample per pixel, not {samples}"
    elif interpretation in COLOUR_INTERPRETATIONS:
        if samples != 3:
            return f"{interpretation} pixel data must have 3 samples per pixel, not {samples}"
    else:
        return f"photometric interpretation {interpretation or '(none)'} cannot be rendered"
    if int(header.BitsAllocated) not in (1, 8, 16, 32, 64):
        return f"Bits Allocated {header.BitsAllocated} cannot be rendered"
    if interpretation == PALETTE:
        missing = palette_present(header)
        if missing is not None:
            return missing
    meta = getattr(header, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if syntax.startswith(VIDEO_PREFIXES):
        return "video pixel data is not rendered as images; ask for video/* instead"
    if syntax and not can_decode(syntax):
        return f"no decoder for transfer syntax {syntax}"
    return None


def render_frames(
    header: pydicom.Dataset,
    frames: Sequence[tuple[int, np.ndarray, PixelDescription]],
    params: RenderParams,
) -> bytes:
    """The frames (1-based number, decoded array, its description) rendered and encoded as
    ``params.media_type``: one frame for JPEG and PNG, one or more for GIF."""
    if not frames:
        raise RenderError("no frame to render")
    if len(frames) > 1 and params.media_type != "image/gif":
        raise RenderError(f"{params.media_type} holds one frame; ask for image/gif")
    reason = can_render(header)
    if reason is not None:
        raise RenderError(reason)
    try:
        rendered = _pixel_frames(header, frames, params)
        frame_count = int(header.get("NumberOfFrames", 1) or 1)
        images = []
        profile: bytes | None = None
        for frame in rendered:
            image = apply_viewport(frame.image, params.viewport)
            image, profile = manage_colour(image, params.iccprofile, frame.attributes)
            label = frame.voi.label() if frame.voi is not None else None
            images.append(annotate(image, params.annotation, frame.attributes, label, frame_count))
        durations = frame_durations(header, [number for number, _, _ in frames])
        return encode(images, params.media_type, params.quality, profile, durations)
    except (ViewportError, IccError, PaletteError) as exc:
        raise RenderError(str(exc)) from exc
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise RenderError(f"the object cannot be rendered ({exc})") from exc


def _pixel_frames(
    header: pydicom.Dataset,
    frames: Sequence[tuple[int, np.ndarray, PixelDescription]],
    params: RenderParams,
) -> list[RenderedFrame]:
    """8-bit greyscale ('L') or RGB images of the frames, before the viewport."""
    interpretation = str(frames[0][2].photometric_interpretation).strip()
    if interpretation in MONOCHROME:
        return _greyscale_frames(header, frames, params)
    palette = palette_tables(header) if interpretation == PALETTE else None
    out = []
    for number, array, description in frames:
        attributes = FrameAttributes(header, number)
        pixels = _frame_shape(array, description)
        if palette is not None:
            signed = description.pixel_representation == 1
            stored = stored_frame(pixels, description.bits_stored, signed)
            rgb = apply_palette(stored.values, palette)
        else:
            rgb = colour_to_rgb(pixels, interpretation, description.bits_stored)
        image = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
        out.append(RenderedFrame(image, attributes, None))
    return out


def _greyscale_frames(
    header: pydicom.Dataset,
    frames: Sequence[tuple[int, np.ndarray, PixelDescription]],
    params: RenderParams,
) -> list[RenderedFrame]:
    prepared: list[tuple[FrameAttributes, StoredFrame, ModalityTransform, PixelDescription]] = []
    for number, array, description in frames:
        attributes = FrameAttributes(header, number)
        signed = description.pixel_representation == 1
        stored = stored_frame(_frame_shape(array, description), description.bits_stored, signed)
        prepared.append((attributes, stored, modality_transform(attributes), description))
    value_range = _shared_range(prepared)
    out = []
    for attributes, stored, modality, description in prepared:
        voi = choose_voi(params.window, attributes, value_range)
        invert = inverts(attributes, str(description.photometric_interpretation).strip())
        grey = render_greyscale(stored, modality, voi, invert)
        out.append(RenderedFrame(Image.fromarray(grey, "L"), attributes, voi))
    return out


def _shared_range(
    prepared: Sequence[tuple[FrameAttributes, StoredFrame, ModalityTransform, PixelDescription]],
) -> Callable[[], tuple[float, float]]:
    """The value range a default window spans, shared by all frames rendered together so an
    animation does not flicker: the modality values' extremes, except for stored values of
    at most 8 bits without rescaling, which keep their full range (an 8-bit XA or US image
    is shown as stored, not stretched)."""
    cache: list[tuple[float, float]] = []

    def value_range() -> tuple[float, float]:
        if not cache:
            lows: list[float] = []
            highs: list[float] = []
            for _, stored, modality, description in prepared:
                if stored.is_integer and description.bits_stored <= 8 and modality.is_identity:
                    bits = max(1, description.bits_stored)
                    signed = description.pixel_representation == 1
                    low = float(-(1 << (bits - 1)) if signed else 0)
                    high = float((1 << (bits - 1)) - 1 if signed else (1 << bits) - 1)
                else:
                    low, high = stored.modality_range(modality)
                lows.append(low)
                highs.append(high)
            cache.append((min(lows), max(highs)))
        return cache[0]

    return value_range


def _frame_shape(array: np.ndarray, description: PixelDescription) -> np.ndarray:
    """The frame as rows x columns (x samples): a leading axis of one frame is dropped."""
    if array.ndim > 2 and array.shape[0] == 1 and description.samples_per_pixel == 1:
        array = array[0]
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.shape[:2] != (description.rows, description.columns) and not (
        array.ndim == 3 and array.shape[1:] == (description.rows, description.columns)
    ):
        raise RenderError(
            f"the decoded frame is {array.shape}, not {description.rows}x{description.columns}"
        )
    return array
