"""The viewport (PS3.18 §8.3.5.1.3): region, mirroring, clipping and fit-to-size."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset

from tessera_codec.pixels import PixelDescription
from tessera_common.rendering import parse_render_query, parse_viewport
from tessera_render.pipeline import RenderError, render_frames
from tessera_render.viewport import Placement, placement

#: (image columns, rows, viewport text) → placement
PLACEMENTS = [
    pytest.param(
        512, 512, "512,512", Placement((0, 0, 512, 512), False, False, (512, 512)), id="same-size"
    ),
    pytest.param(
        512, 512, "128,128", Placement((0, 0, 512, 512), False, False, (128, 128)), id="thumbnail"
    ),
    pytest.param(
        640,
        480,
        "128,128",
        Placement((0, 0, 640, 480), False, False, (128, 96)),
        id="fit-landscape-keeps-aspect",
    ),
    pytest.param(
        480,
        640,
        "128,128",
        Placement((0, 0, 480, 640), False, False, (96, 128)),
        id="fit-portrait-keeps-aspect",
    ),
    pytest.param(
        100, 50, "400,400", Placement((0, 0, 100, 50), False, False, (400, 200)), id="upscale"
    ),
    pytest.param(
        512,
        512,
        "100,100,10,20,100,100",
        Placement((10, 20, 110, 120), False, False, (100, 100)),
        id="region-1-to-1",
    ),
    pytest.param(
        512,
        512,
        "50,50,10,20,100,100",
        Placement((10, 20, 110, 120), False, False, (50, 50)),
        id="region-scaled",
    ),
    pytest.param(
        512,
        512,
        "256,256,256,256,,",
        Placement((256, 256, 512, 512), False, False, (256, 256)),
        id="region-defaults-to-the-edges",
    ),
    pytest.param(
        512,
        512,
        "100,100,0,0,-100,100",
        Placement((0, 0, 100, 100), True, False, (100, 100)),
        id="negative-sw-mirrors",
    ),
    pytest.param(
        512,
        512,
        "100,100,0,0,100,-100",
        Placement((0, 0, 100, 100), False, True, (100, 100)),
        id="negative-sh-flips",
    ),
    pytest.param(
        512,
        512,
        "300,300,400,400,300,300",
        Placement((400, 400, 512, 512), False, False, (300, 300)),
        id="region-clipped-to-the-image",
    ),
]


@pytest.mark.parametrize(("columns", "rows", "text", "expected"), PLACEMENTS)
def test_placement(columns: int, rows: int, text: str, expected: Placement) -> None:
    assert placement(columns, rows, parse_viewport(text)) == expected


def gradient_header() -> Dataset:
    ds = Dataset()
    ds.Rows, ds.Columns = 64, 128
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.PixelRepresentation = 1, 8, 8, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    return ds


def gradient() -> np.ndarray:
    """Columns 0..127 → values 0..254 (left dark, right bright), rows 0..63 add 0 or 1."""
    columns = (np.arange(128, dtype=np.uint8) * 2)[None, :].repeat(64, axis=0)
    return columns + (np.arange(64) >= 32)[:, None].astype(np.uint8)


def render(viewport: str) -> np.ndarray:
    header = gradient_header()
    frames = [(1, gradient(), PixelDescription.from_dataset(header))]
    data = render_frames(header, frames, parse_render_query({"viewport": viewport}, "image/png"))
    return np.asarray(Image.open(io.BytesIO(data)))


def test_region_at_its_own_size_is_an_exact_crop() -> None:
    np.testing.assert_array_equal(render("16,8,10,20,16,8"), gradient()[20:28, 10:26])


def test_mirrored_region() -> None:
    np.testing.assert_array_equal(render("16,8,10,20,-16,8"), gradient()[20:28, 10:26][:, ::-1])
    np.testing.assert_array_equal(render("16,8,10,28,16,-8"), gradient()[28:36, 10:26][::-1, :])


def test_downscale_keeps_the_gradient() -> None:
    out = render("32,32")
    assert out.shape == (16, 32)
    assert (np.diff(out[8].astype(int)) >= 0).all()  # still dark to bright


def test_upscale() -> None:
    assert render("512,512").shape == (256, 512)


def test_region_outside_the_image_is_refused() -> None:
    with pytest.raises(RenderError, match="outside"):
        render("10,10,500,500,10,10")
