"""Colour pixel data → 8-bit RGB (PS3.3 §C.7.6.3.1.2 Photometric Interpretation).

The codec's decoder already converts YBR_FULL(_422), YBR_ICT and YBR_RCT to RGB (and says so
in the PixelDescription it returns); arrays it leaves in YBR_FULL or YBR_PARTIAL are
converted here with the equations of PS3.3 §C.7.6.3.1.2. Samples wider than 8 bits are
scaled to 8 bits; a colour-by-plane array (Planar Configuration 1) is interleaved.
"""

from __future__ import annotations

import numpy as np

#: Photometric interpretations of 3-sample images we render.
COLOUR_INTERPRETATIONS = frozenset(
    {
        "RGB",
        "YBR_FULL",
        "YBR_FULL_422",
        "YBR_PARTIAL_422",
        "YBR_PARTIAL_420",
        "YBR_ICT",
        "YBR_RCT",
    }
)


def interleaved(array: np.ndarray, samples: int = 3) -> np.ndarray:
    """rows x columns x samples, whichever way the decoder laid the planes out."""
    if array.ndim == 3 and array.shape[-1] != samples and array.shape[0] == samples:
        return np.moveaxis(array, 0, -1)
    return array


def to_8bit(array: np.ndarray, bits_stored: int) -> np.ndarray:
    """Unsigned samples of ``bits_stored`` bits scaled to 0-255 (rounded)."""
    if array.dtype == np.uint8 and bits_stored >= 8:
        return array
    if array.dtype.kind == "f":
        return np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)
    largest = (1 << max(1, min(bits_stored, 32))) - 1
    wide = np.clip(array.astype(np.int64), 0, largest)
    return ((wide * 255 + largest // 2) // largest).astype(np.uint8)


def ybr_to_rgb(array: np.ndarray, partial: bool) -> np.ndarray:
    """PS3.3 §C.7.6.3.1.2: YBR_FULL (full-range CCIR 601) or YBR_PARTIAL (Y 16-235, CbCr
    16-240) to RGB."""
    ybr = array.astype(np.float32)
    y, cb, cr = ybr[..., 0], ybr[..., 1] - 128.0, ybr[..., 2] - 128.0
    if partial:
        y = (y - 16.0) * (255.0 / 219.0)
        cb = cb * (255.0 / 224.0)
        cr = cr * (255.0 / 224.0)
    rgb = np.empty(array.shape, dtype=np.float32)
    rgb[..., 0] = y + 1.402 * cr
    rgb[..., 1] = y - 0.344136 * cb - 0.714136 * cr
    rgb[..., 2] = y + 1.772 * cb
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def colour_to_rgb(
    array: np.ndarray, photometric_interpretation: str, bits_stored: int
) -> np.ndarray:
    """8-bit RGB of a 3-sample frame as decoded."""
    pixels = to_8bit(interleaved(array), bits_stored)
    if photometric_interpretation in ("YBR_FULL", "YBR_FULL_422"):
        return ybr_to_rgb(pixels, partial=False)
    if photometric_interpretation.startswith("YBR_PARTIAL"):
        return ybr_to_rgb(pixels, partial=True)
    return pixels  # RGB, and YBR_ICT/YBR_RCT which JPEG 2000 decoders return as RGB
