"""VOI windowing against a straightforward numpy reference of PS3.3 §C.11.2.1.2 / §C.11.2.1.3.

The reference is written per pixel from the standard's text; the pipeline's lookup-table
path must reproduce it exactly in PNG, and within PSNR 45 dB in JPEG at quality 95.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset

from tessera_codec.pixels import PixelDescription
from tessera_common.rendering import Window, parse_render_query
from tessera_render.pipeline import render_frames

Y_MIN, Y_MAX = 0.0, 255.0


def reference_window(x: np.ndarray, c: float, w: float, function: str) -> np.ndarray:
    """PS3.3 §C.11.2.1.2.1 LINEAR, §C.11.2.1.3.1 SIGMOID, §C.11.2.1.3.2 LINEAR_EXACT."""
    y = np.empty(x.shape, dtype=np.float64)
    for i, value in np.ndenumerate(x):
        if function == "LINEAR":
            if value <= c - 0.5 - (w - 1) / 2:
                y[i] = Y_MIN
            elif value > c - 0.5 + (w - 1) / 2:
                y[i] = Y_MAX
            else:
                y[i] = ((value - (c - 0.5)) / (w - 1) + 0.5) * (Y_MAX - Y_MIN) + Y_MIN
        elif function == "LINEAR_EXACT":
            if value <= c - w / 2:
                y[i] = Y_MIN
            elif value > c + w / 2:
                y[i] = Y_MAX
            else:
                y[i] = ((value - c) / w + 0.5) * (Y_MAX - Y_MIN) + Y_MIN
        else:
            y[i] = (Y_MAX - Y_MIN) / (1 + np.exp(-4 * (value - c) / w)) + Y_MIN
    return y


def reference_render(
    stored: np.ndarray, slope: float, intercept: float, window: Window, invert: bool
) -> np.ndarray:
    modality = stored.astype(np.float64) * slope + intercept
    y = reference_window(modality, window.center, window.width, window.function)
    if invert:
        y = Y_MAX - y
    return np.clip(np.floor(y + 0.5), 0, 255).astype(np.uint8)


def ct_header(slope: float = 1.0, intercept: float = -1024.0, mono1: bool = False) -> Dataset:
    ds = Dataset()
    ds.Rows, ds.Columns = 64, 64
    ds.SamplesPerPixel = 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 1
    ds.PhotometricInterpretation = "MONOCHROME1" if mono1 else "MONOCHROME2"
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.Modality = "CT"
    return ds


def ct_pixels() -> np.ndarray:
    """Every 12-bit signed value once (a 64x64 ramp from -2048 to 2047)."""
    return np.arange(-2048, 2048, dtype=np.int16).reshape(64, 64)


def frames_of(
    header: Dataset, pixels: np.ndarray
) -> list[tuple[int, np.ndarray, PixelDescription]]:
    return [(1, pixels, PixelDescription.from_dataset(header))]


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


WINDOW_CASES = [
    pytest.param("40,400,linear", 1.0, -1024.0, False, id="linear-soft-tissue"),
    pytest.param("-600,1500,linear", 1.0, -1024.0, False, id="linear-lung"),
    pytest.param("40.5,1,linear", 1.0, -1024.0, False, id="linear-width-1-threshold"),
    pytest.param("300,2,linear", 1.0, -1024.0, False, id="linear-width-2"),
    pytest.param("40,400,linear-exact", 1.0, -1024.0, False, id="linear-exact"),
    pytest.param("0.25,0.5,linear-exact", 0.001, 0.0, False, id="linear-exact-fractional"),
    pytest.param("40,400,sigmoid", 1.0, -1024.0, False, id="sigmoid"),
    pytest.param("1000,3000,sigmoid", 2.5, -10.0, False, id="sigmoid-rescaled"),
    pytest.param("40,400,linear", 1.0, -1024.0, True, id="linear-monochrome1-inverted"),
    pytest.param("40,400,sigmoid", 1.0, -1024.0, True, id="sigmoid-monochrome1-inverted"),
]


@pytest.mark.parametrize(("window", "slope", "intercept", "mono1"), WINDOW_CASES)
def test_png_equals_the_reference_formulas(
    window: str, slope: float, intercept: float, mono1: bool
) -> None:
    header = ct_header(slope, intercept, mono1)
    params = parse_render_query({"window": window}, "image/png")
    assert params.window is not None
    out = decode(render_frames(header, frames_of(header, ct_pixels()), params))
    expected = reference_render(ct_pixels(), slope, intercept, params.window, mono1)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize(("window", "slope", "intercept", "mono1"), WINDOW_CASES)
def test_jpeg_q95_is_close_to_the_reference(
    window: str, slope: float, intercept: float, mono1: bool
) -> None:
    header = ct_header(slope, intercept, mono1)
    params = parse_render_query({"window": window, "quality": "95"}, "image/jpeg")
    assert params.window is not None
    out = decode(render_frames(header, frames_of(header, ct_pixels()), params))
    expected = reference_render(ct_pixels(), slope, intercept, params.window, mono1)
    assert psnr(out, expected) >= 45.0


def test_float_path_equals_the_lut_path() -> None:
    """Float pixel data takes the per-pixel path: same formulas, same bytes."""
    header = ct_header()
    params = parse_render_query({"window": "40,400,linear"}, "image/png")
    as_int = decode(render_frames(header, frames_of(header, ct_pixels()), params))
    floats = ct_pixels().astype(np.float32)
    as_float = decode(render_frames(header, frames_of(header, floats), params))
    np.testing.assert_array_equal(as_int, as_float)


def voi_header(**attributes: object) -> Dataset:
    header = ct_header()
    for keyword, value in attributes.items():
        setattr(header, keyword, value)
    return header


def voi_lut_item() -> Dataset:
    item = Dataset()
    item.LUTDescriptor = [4096, -2048, 12]
    item.LUTData = list(range(4095, -1, -1))  # a reversing LUT: easy to recognise
    return item


#: Which VOI applies (the request's window > the object's window > VOI LUT > value range):
#: (request, object attributes, stored value, expected 8-bit output).
DEFAULT_CASES = [
    pytest.param(None, {}, -2048, 0, id="range-minimum-black"),
    pytest.param(None, {}, 2047, 255, id="range-maximum-white"),
    pytest.param(
        None, {"WindowCenter": 1024 - 1024, "WindowWidth": 2}, 1024, 255, id="object-window"
    ),
    pytest.param(
        None,
        {"WindowCenter": [0, 500], "WindowWidth": [2, 10]},
        1023,
        0,
        id="object-first-window-of-several",
    ),
    pytest.param(
        None, {"WindowCenter": 0, "WindowWidth": 0}, 2047, 255, id="object-window-width-0-ignored"
    ),
    pytest.param(
        None,
        {"WindowCenter": 0, "WindowWidth": 400, "VOILUTFunction": "SIGMOID"},
        1024,
        128,
        id="object-window-sigmoid-centre",
    ),
    pytest.param(
        "0,2", {"WindowCenter": 5000, "WindowWidth": 2}, 1024, 255, id="request-window-wins"
    ),
    pytest.param(None, {"VOILUTSequence": [voi_lut_item()]}, 2047, 0, id="voi-lut-last-entry"),
    pytest.param(None, {"VOILUTSequence": [voi_lut_item()]}, -2048, 255, id="voi-lut-first-entry"),
]


@pytest.mark.parametrize(("window", "attributes", "stored", "expected"), DEFAULT_CASES)
def test_voi_precedence(
    window: str | None, attributes: dict[str, object], stored: int, expected: int
) -> None:
    header = voi_header(**attributes)
    if "VOILUTSequence" in attributes:
        del header.RescaleSlope, header.RescaleIntercept
    query = {"window": window} if window else {}
    out = decode(
        render_frames(
            header, frames_of(header, ct_pixels()), parse_render_query(query, "image/png")
        )
    )
    position = tuple(np.argwhere(ct_pixels() == stored)[0])
    assert int(out[position]) == expected
