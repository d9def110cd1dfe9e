"""Encoding: JPEG quality and chroma subsampling, PNG, animated GIF with cine timing
(PS3.3 §C.7.6.5)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageSequence
from pydicom.dataset import Dataset

from tessera_codec.pixels import PixelDescription
from tessera_common.rendering import parse_render_query
from tessera_render.cine import frame_durations
from tessera_render.pipeline import render_frames


def cine_header(frames: int = 4, colour: bool = False, **attributes: object) -> Dataset:
    ds = Dataset()
    ds.Rows, ds.Columns = 32, 32
    ds.SamplesPerPixel = 3 if colour else 1
    ds.BitsAllocated, ds.BitsStored, ds.PixelRepresentation = 8, 8, 0
    ds.PhotometricInterpretation = "RGB" if colour else "MONOCHROME2"
    ds.NumberOfFrames = frames
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def frames_of(ds: Dataset, count: int) -> list[tuple[int, np.ndarray, PixelDescription]]:
    description = PixelDescription.from_dataset(ds)
    shape = (32, 32, 3) if ds.SamplesPerPixel == 3 else (32, 32)
    return [(n, np.full(shape, n * 40, dtype=np.uint8), description) for n in range(1, count + 1)]


DURATIONS = [
    pytest.param({"FrameTime": 66.7}, [1, 2, 3], [66.7, 66.7, 66.7], id="frame-time"),
    pytest.param(
        {"FrameTimeVector": [0, 40, 50, 60]}, [1, 2, 4], [40, 50, 60], id="frame-time-vector"
    ),
    pytest.param({"CineRate": 25}, [1, 2], [40.0, 40.0], id="cine-rate"),
    pytest.param({"RecommendedDisplayFrameRate": 10}, [1], [100.0], id="recommended-rate"),
    pytest.param({}, [1, 2], [100.0, 100.0], id="default-100-ms"),
]


@pytest.mark.parametrize(("attributes", "numbers", "expected"), DURATIONS)
def test_frame_durations(
    attributes: dict[str, Any], numbers: list[int], expected: list[float]
) -> None:
    assert frame_durations(cine_header(**attributes), numbers) == pytest.approx(expected)


GIFS = [
    pytest.param(False, {"FrameTime": 50}, id="greyscale-frame-time"),
    pytest.param(True, {"CineRate": 20}, id="colour-cine-rate"),
]


@pytest.mark.parametrize(("colour", "attributes"), GIFS)
def test_animated_gif(colour: bool, attributes: dict[str, Any]) -> None:
    ds = cine_header(4, colour, **attributes)
    data = render_frames(ds, frames_of(ds, 4), parse_render_query({}, "image/gif"))
    image = Image.open(io.BytesIO(data))
    assert image.format == "GIF"
    frames = list(ImageSequence.Iterator(image))
    assert len(frames) == 4
    assert [f.info["duration"] for f in frames] == [50] * 4
    assert image.info.get("loop") == 0


def test_single_frame_gif() -> None:
    ds = cine_header(1)
    data = render_frames(ds, frames_of(ds, 1), parse_render_query({}, "image/gif"))
    image = Image.open(io.BytesIO(data))
    assert image.format == "GIF" and getattr(image, "n_frames", 1) == 1


def jpeg_bytes(quality: int, colour: bool) -> bytes:
    ds = cine_header(1, colour)
    rng = np.random.default_rng(1)
    shape = (32, 32, 3) if colour else (32, 32)
    pixels = rng.integers(0, 255, shape, dtype=np.uint8)
    frames = [(1, pixels, PixelDescription.from_dataset(ds))]
    params = parse_render_query({"quality": str(quality)}, "image/jpeg")
    return render_frames(ds, frames, params)


def jpeg_of(quality: int, colour: bool) -> Image.Image:
    return Image.open(io.BytesIO(jpeg_bytes(quality, colour)))


SUBSAMPLING = [  # Pillow's JpegImagePlugin.get_sampling: 0 = 4:4:4, 2 = 4:2:0
    pytest.param(90, 2, id="q90-420"),
    pytest.param(94, 2, id="q94-420"),
    pytest.param(95, 0, id="q95-444"),
    pytest.param(100, 0, id="q100-444"),
]


@pytest.mark.parametrize(("quality", "sampling"), SUBSAMPLING)
def test_jpeg_chroma_subsampling(quality: int, sampling: int) -> None:
    from PIL import JpegImagePlugin

    assert JpegImagePlugin.get_sampling(jpeg_of(quality, colour=True)) == sampling


def test_quality_changes_the_size() -> None:
    assert len(jpeg_bytes(10, colour=False)) < len(jpeg_bytes(95, colour=False))


def test_png_modes() -> None:
    for colour, mode in ((False, "L"), (True, "RGB")):
        ds = cine_header(1, colour)
        data = render_frames(ds, frames_of(ds, 1), parse_render_query({}, "image/png"))
        image = Image.open(io.BytesIO(data))
        assert (image.format, image.mode) == ("PNG", mode)
