"""ICC profiles: the shipped profiles, checked with LittleCMS (Pillow ImageCms), and the
``iccprofile`` parameter (PS3.18 §8.3.5.1.5)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageCms
from pydicom.dataset import Dataset

from tessera_codec.pixels import PixelDescription
from tessera_common.rendering import parse_render_query
from tessera_render.icc import PROFILES
from tessera_render.pipeline import render_frames
from tessera_render.profiles.iccwriter import SPACES, ColourSpace, profile_bytes

SRGB = ImageCms.createProfile("sRGB")


def profile(name: str) -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(io.BytesIO((PROFILES / f"{name}.icc").read_bytes()))


@pytest.mark.parametrize("space", SPACES, ids=[s.name for s in SPACES])
def test_shipped_profile_is_what_the_writer_makes(space: ColourSpace) -> None:
    assert (PROFILES / f"{space.name}.icc").read_bytes() == profile_bytes(space)


#: (profile, description) — the profiles load in LittleCMS and name themselves.
DESCRIPTIONS = [
    pytest.param("srgb", "sRGB", id="srgb"),
    pytest.param("adobergb", "Adobe RGB (1998)", id="adobergb"),
    pytest.param("rommrgb", "ROMM RGB", id="rommrgb"),
    pytest.param("displayp3", "Display P3", id="displayp3"),
]


@pytest.mark.parametrize(("name", "description"), DESCRIPTIONS)
def test_profile_loads(name: str, description: str) -> None:
    loaded = profile(name)
    assert description in ImageCms.getProfileDescription(loaded)
    assert loaded.profile.xcolor_space.strip() == "RGB"
    assert loaded.profile.version == pytest.approx(4.3)


#: sRGB colour → the same colour in another space (published conversions, ±2 levels).
CONVERSIONS = [
    pytest.param("srgb", (255, 0, 0), (255, 0, 0), id="srgb-identity"),
    pytest.param("srgb", (12, 200, 99), (12, 200, 99), id="srgb-identity-mixed"),
    pytest.param("adobergb", (255, 0, 0), (219, 0, 0), id="adobergb-red"),
    pytest.param("adobergb", (0, 255, 0), (144, 255, 60), id="adobergb-green"),
    pytest.param("displayp3", (255, 0, 0), (234, 51, 35), id="displayp3-red"),
    pytest.param("displayp3", (0, 255, 0), (117, 251, 76), id="displayp3-green"),
    pytest.param("rommrgb", (255, 0, 0), (179, 70, 26), id="rommrgb-red"),
    pytest.param("rommrgb", (255, 255, 255), (255, 255, 255), id="rommrgb-white"),
]


def convert(rgb: tuple[int, int, int], target: Any, source: Any = SRGB) -> tuple[int, ...]:
    transform = ImageCms.buildTransform(
        source, target, "RGB", "RGB", renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC
    )
    image = ImageCms.applyTransform(Image.new("RGB", (1, 1), rgb), transform)
    assert image is not None
    return tuple(image.getpixel((0, 0)))  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "source", "expected"), CONVERSIONS)
def test_profile_converts_known_colours(
    name: str, source: tuple[int, int, int], expected: tuple[int, int, int]
) -> None:
    got = convert(source, profile(name))
    assert np.abs(np.subtract(got, expected)).max() <= 2


def test_our_srgb_matches_littlecms_srgb() -> None:
    colours = [(0, 0, 0), (255, 255, 255), (128, 64, 200), (10, 250, 30), (200, 200, 20)]
    for colour in colours:
        got = convert(colour, SRGB, profile("srgb"))
        assert np.abs(np.subtract(got, colour)).max() <= 1


def rgb_header(icc: bytes | None = None) -> Dataset:
    ds = Dataset()
    ds.Rows, ds.Columns = 8, 8
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.PixelRepresentation = 3, 8, 8, 0
    ds.PhotometricInterpretation = "RGB"
    if icc is not None:
        ds.ICCProfile = icc
    return ds


def render(header: Dataset, iccprofile: str, media_type: str = "image/png") -> Image.Image:
    red = np.zeros((8, 8, 3), dtype=np.uint8)
    red[..., 0] = 255
    frames = [(1, red, PixelDescription.from_dataset(header))]
    params = parse_render_query({"iccprofile": iccprofile}, media_type)  # type: ignore[arg-type]
    return Image.open(io.BytesIO(render_frames(header, frames, params)))


ADOBE = (PROFILES / "adobergb.icc").read_bytes()

#: (object's profile, iccprofile, media type, embedded profile's description or None, pixel)
EMBEDDING = [
    pytest.param(None, "no", "image/png", None, (255, 0, 0), id="no-without-profile"),
    pytest.param(ADOBE, "no", "image/png", None, (255, 0, 0), id="no-ignores-the-objects"),
    pytest.param(None, "yes", "image/png", "sRGB", (255, 0, 0), id="yes-defaults-to-srgb"),
    pytest.param(ADOBE, "yes", "image/png", "Adobe", (255, 0, 0), id="yes-embeds-the-objects"),
    pytest.param(None, "adobergb", "image/png", "Adobe", (219, 0, 0), id="srgb-to-adobergb"),
    pytest.param(ADOBE, "adobergb", "image/png", "Adobe", (255, 0, 0), id="adobergb-to-itself"),
    pytest.param(None, "srgb", "image/png", "sRGB", (255, 0, 0), id="srgb-to-srgb"),
    pytest.param(None, "displayp3", "image/jpeg", "Display P3", (234, 51, 35), id="jpeg-displayp3"),
]


@pytest.mark.parametrize(("icc", "choice", "media_type", "description", "pixel"), EMBEDDING)
def test_iccprofile_parameter(
    icc: bytes | None, choice: str, media_type: str, description: str | None, pixel: tuple[int, ...]
) -> None:
    image = render(rgb_header(icc), choice, media_type)
    embedded = image.info.get("icc_profile")
    if description is None:
        assert not embedded
    else:
        assert embedded
        loaded = ImageCms.ImageCmsProfile(io.BytesIO(embedded))
        assert description in ImageCms.getProfileDescription(loaded)
    tolerance = 6 if media_type == "image/jpeg" else 1
    got: Any = image.convert("RGB").getpixel((4, 4))
    assert np.abs(np.subtract(got, pixel)).max() <= tolerance


def test_wsi_profile_comes_from_the_optical_path() -> None:
    header = rgb_header()
    path = Dataset()
    path.OpticalPathIdentifier = "1"
    path.ICCProfile = ADOBE
    header.OpticalPathSequence = [path]
    embedded = render(header, "yes").info["icc_profile"]
    assert embedded == ADOBE


def test_greyscale_with_a_profile_becomes_rgb() -> None:
    header = rgb_header()
    header.SamplesPerPixel = 1
    header.PhotometricInterpretation = "MONOCHROME2"
    frames = [(1, np.full((8, 8), 100, np.uint8), PixelDescription.from_dataset(header))]
    params = parse_render_query({"iccprofile": "rommrgb"}, "image/png")
    image = Image.open(io.BytesIO(render_frames(header, frames, params)))
    assert image.mode == "RGB"
    assert "icc_profile" in image.info
