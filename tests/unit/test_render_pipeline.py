"""Rendering real objects: a reference table over pydicom's and the shared test data.

Each frame is decoded the way the render service does it (``tessera_codec.pixels.
decode_frame``) and rendered as PNG (lossless, so pixel values can be checked).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import generate_fragmented_frames
from tests.support.dicom_files import all_files

from tessera_codec.pixels import NATIVE_SYNTAXES, PixelDescription, decode_frame
from tessera_common.rendering import parse_render_query
from tessera_render.pipeline import RenderError, can_render, render_frames

Frames = list[tuple[int, np.ndarray, PixelDescription]]


@cache
def path_of(name: str) -> Path:
    for f in all_files():
        if f.path.name == name:
            return f.path
    pytest.skip(f"{name} is not in the test data")


@cache
def load(name: str, numbers: tuple[int, ...] = (1,)) -> tuple[Dataset, Frames]:
    """(header without pixels, decoded frames) as the render service gets them."""
    path = path_of(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
        header = pydicom.dcmread(path, stop_before_pixels=True)
    keyword = next(k for k in ("PixelData", "FloatPixelData") if k in ds)
    description = PixelDescription.from_dataset(ds, pixel_keyword=keyword)
    syntax = str(ds.file_meta.TransferSyntaxUID)
    frames: Frames = []
    if syntax in NATIVE_SYNTAXES:
        for number in numbers:
            array, described = decode_frame(
                ds[keyword].value, syntax, description, index=number - 1
            )
            frames.append((number, array, described))
    else:
        fragments = list(
            generate_fragmented_frames(ds.PixelData, number_of_frames=description.number_of_frames)
        )
        for number in numbers:
            array, described = decode_frame(b"".join(fragments[number - 1]), syntax, description)
            frames.append((number, array, described))
    return header, frames


def render_png(name: str, query: dict[str, str] | None = None) -> Image.Image:
    header, frames = load(name)
    data = render_frames(header, frames, parse_render_query(query or {}, "image/png"))
    return Image.open(io.BytesIO(data))


@dataclass(frozen=True)
class Case:
    file: str
    mode: str
    size: tuple[int, int]
    query: dict[str, str] = field(default_factory=dict)
    #: (x, y) → expected value (greyscale int or RGB tuple)
    pixels: dict[tuple[int, int], object] = field(default_factory=dict)
    #: largest difference allowed per sample (lossy or colour-converted data)
    tolerance: int = 0


CASES = [
    # CT, signed 16-bit (14 stored) with Rescale Intercept; the object's window is 40/100.
    pytest.param(Case("ct_src_evrle.dcm", "L", (512, 512), pixels={(0, 0): 0}), id="ct-signed-16"),
    pytest.param(Case("ct_htj2k_lossless.dcm", "L", (512, 512)), id="ct-unsigned-htj2k"),
    pytest.param(Case("MR_small.dcm", "L", (64, 64)), id="mr-signed"),
    pytest.param(Case("MR2_UNCR.dcm", "L", (1024, 1024)), id="mr-12-bit"),
    pytest.param(Case("RG3_UNCI.dcm", "L", (1760, 1760)), id="cr-monochrome1"),
    pytest.param(Case("mg_for_presentation.dcm", "L", (3072, 2614)), id="mg-12-bit"),
    pytest.param(Case("us8_jpeg_baseline.dcm", "L", (1024, 768)), id="us-8-bit-jpeg"),
    pytest.param(Case("xa_multiframe.dcm", "L", (512, 512)), id="xa-8-bit-multiframe"),
    pytest.param(Case("mlut_18.dcm", "L", (512, 512)), id="modality-lut-sequence"),
    pytest.param(Case("vlut_04.dcm", "L", (512, 512)), id="voi-lut-sequence"),
    pytest.param(Case("eCT_Supplemental.dcm", "L", (512, 512)), id="enhanced-ct-functional-groups"),
    pytest.param(Case("emri_small_jpeg_ls_lossless.dcm", "L", (64, 64)), id="enhanced-mr-jpeg-ls"),
    pytest.param(Case("seg_binary.dcm", "L", (512, 512)), id="seg-1-bit"),
    pytest.param(Case("parametric_map_float.dcm", "L", (512, 512)), id="float-pixel-data"),
    pytest.param(Case("SC_rgb.dcm", "RGB", (100, 100), pixels={(50, 5): (255, 0, 0)}), id="rgb"),
    pytest.param(
        Case("SC_rgb_16bit.dcm", "RGB", (100, 100), pixels={(50, 5): (255, 0, 0)}), id="rgb-16-bit"
    ),
    pytest.param(
        Case(
            "SC_rgb_32bit.dcm",
            "RGB",
            (100, 100),
            pixels={(50, 5): (255, 0, 0), (50, 25): (0, 255, 0), (50, 85): (192, 192, 192)},
        ),
        id="rgb-32-bit",
    ),
    pytest.param(
        Case(
            "SC_ybr_full_uncompressed.dcm",
            "RGB",
            (100, 100),
            pixels={(50, 5): (255, 0, 0), (50, 25): (0, 255, 0), (50, 85): (192, 192, 192)},
            tolerance=5,
        ),
        id="ybr-full-native",
    ),
    pytest.param(
        Case(
            "SC_ybr_full_422_uncompressed.dcm",
            "RGB",
            (100, 100),
            pixels={(50, 5): (255, 0, 0), (50, 25): (0, 255, 0), (50, 85): (192, 192, 192)},
            tolerance=5,
        ),
        id="ybr-full-422-native",
    ),
    pytest.param(
        Case(
            "SC_rgb_jpeg_dcmtk.dcm",
            "RGB",
            (100, 100),
            pixels={(50, 5): (255, 0, 0), (50, 25): (0, 255, 0), (50, 85): (192, 192, 192)},
            tolerance=5,
        ),
        id="ybr-full-jpeg-baseline",
    ),
    pytest.param(Case("US1_J2KI.dcm", "RGB", (640, 480)), id="ybr-ict-j2k"),
    pytest.param(Case("color-pl.dcm", "RGB", (256, 120)), id="rgb-planar-configuration-1"),
    pytest.param(Case("examples_ybr_color.dcm", "RGB", (320, 240)), id="ybr-full-422-jpeg"),
    pytest.param(Case("us_rgb_htj2k_lossless.dcm", "RGB", (640, 480)), id="ybr-rct-htj2k"),
    pytest.param(Case("OBXXXX1A.dcm", "RGB", (800, 600)), id="palette-color-8-bit"),
    pytest.param(Case("gdcm-US-ALOKA-16.dcm", "RGB", (640, 480)), id="palette-segmented-16-bit"),
    pytest.param(Case("wsi-000004_fixed.dcm", "RGB", (256, 256)), id="wsi-tile"),
]


@pytest.mark.parametrize("case", CASES)
def test_reference_case(case: Case) -> None:
    image = render_png(case.file, case.query)
    assert image.mode == case.mode
    assert image.size == case.size
    assert "icc_profile" not in image.info
    for (x, y), value in case.pixels.items():
        got = np.asarray(image.getpixel((x, y)), dtype=int)
        assert np.abs(got - np.asarray(value)).max() <= case.tolerance, (x, y)
    header, _ = load(case.file)
    assert can_render(header) is None


def test_ct_uses_the_objects_window() -> None:
    """ct_src_evrle: its first Window Center/Width (LINEAR) over HU = stored x slope +
    intercept, exactly; the HTJ2K copy stores unsigned values with another intercept and
    renders identically."""
    header, frames = load("ct_src_evrle.dcm")
    hu = frames[0][1] * float(header.RescaleSlope) + float(header.RescaleIntercept)
    c, w = float(header.WindowCenter), float(header.WindowWidth)
    ramp = ((hu - (c - 0.5)) / (w - 1) + 0.5) * 255
    y = np.where(hu <= c - 0.5 - (w - 1) / 2, 0, np.where(hu > c - 0.5 + (w - 1) / 2, 255, ramp))
    expected = np.floor(y + 0.5).astype(np.uint8)
    signed = np.asarray(render_png("ct_src_evrle.dcm"))
    np.testing.assert_array_equal(signed, expected)
    np.testing.assert_array_equal(signed, np.asarray(render_png("ct_htj2k_lossless.dcm")))


def test_monochrome1_is_inverted() -> None:
    """The same window on MONOCHROME1 and on the data relabelled MONOCHROME2 are negatives."""
    header, frames = load("RG3_UNCI.dcm")
    params = parse_render_query({"viewport": "256,256,700,700,256,256"}, "image/png")
    mono1 = np.asarray(Image.open(io.BytesIO(render_frames(header, frames, params))))
    relabelled = Dataset()
    relabelled.update(header)
    relabelled.PhotometricInterpretation = "MONOCHROME2"
    number, array, description = frames[0]
    from dataclasses import replace

    mono2_frames = [(number, array, replace(description, photometric_interpretation="MONOCHROME2"))]
    mono2 = np.asarray(Image.open(io.BytesIO(render_frames(relabelled, mono2_frames, params))))
    np.testing.assert_array_equal(mono1.astype(int) + mono2.astype(int), 255)


def test_palette_colours_come_from_the_lut() -> None:
    header, frames = load("OBXXXX1A.dcm")
    rgb = np.asarray(render_png("OBXXXX1A.dcm"))
    index = frames[0][1]
    red = np.frombuffer(header.RedPaletteColorLookupTableData, dtype="<u2")
    green = np.frombuffer(header.GreenPaletteColorLookupTableData, dtype="<u2")
    expected_red = (red[index].astype(np.int64) * 255 + 32767) // 65535
    expected_green = (green[index].astype(np.int64) * 255 + 32767) // 65535
    np.testing.assert_array_equal(rgb[..., 0], expected_red)
    np.testing.assert_array_equal(rgb[..., 1], expected_green)


def test_segmented_palette_is_colourful() -> None:
    rgb = np.asarray(render_png("gdcm-US-ALOKA-16.dcm")).astype(int)
    assert (np.abs(rgb[..., 0] - rgb[..., 2]) > 20).any()  # not just grey


def test_enhanced_ct_uses_per_frame_functional_groups() -> None:
    """eCT_Supplemental keeps Rescale Intercept (-1024) and Window 49/102 in the Shared
    Functional Groups only; without them the frame would be windowed over its min/max."""
    header, frames = load("eCT_Supplemental.dcm")
    grey = np.asarray(render_png("eCT_Supplemental.dcm"))
    stored = frames[0][1].astype(np.float64)
    shared = header.SharedFunctionalGroupsSequence[0]
    transform = shared.PixelValueTransformationSequence[0]
    voi = shared.FrameVOILUTSequence[0]
    value = stored * float(transform.RescaleSlope) + float(transform.RescaleIntercept)
    c, w = float(voi.WindowCenter), float(voi.WindowWidth)
    assert (grey[value <= c - 0.5 - (w - 1) / 2] == 0).all()
    assert (grey[value > c - 0.5 + (w - 1) / 2] == 255).all()


def test_wsi_tile_keeps_its_colours() -> None:
    _, frames = load("wsi-000004_fixed.dcm")
    np.testing.assert_array_equal(np.asarray(render_png("wsi-000004_fixed.dcm")), frames[0][1])


def test_jpeg_of_each_kind() -> None:
    for name, mode in (("ct_src_evrle.dcm", "L"), ("examples_ybr_color.dcm", "RGB")):
        header, frames = load(name)
        data = render_frames(header, frames, parse_render_query({}, "image/jpeg"))
        image = Image.open(io.BytesIO(data))
        assert (image.format, image.mode) == ("JPEG", mode)


def bare(**attributes: object) -> Dataset:
    ds = Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


IMAGE = {"Rows": 4, "Columns": 4, "BitsAllocated": 8, "SamplesPerPixel": 1}

REFUSALS = [
    pytest.param(bare(Modality="SR"), "no image pixel data", id="no-pixel-data"),
    pytest.param(bare(**IMAGE, PhotometricInterpretation="CMYK"), "CMYK", id="cmyk"),
    pytest.param(bare(**IMAGE, PhotometricInterpretation="HSV"), "HSV", id="hsv"),
    pytest.param(
        bare(**{**IMAGE, "SamplesPerPixel": 3}, PhotometricInterpretation="MONOCHROME2"),
        "1 sample",
        id="monochrome-with-3-samples",
    ),
    pytest.param(
        bare(**IMAGE, PhotometricInterpretation="PALETTE COLOR"),
        "Palette",
        id="palette-without-lut",
    ),
]


@pytest.mark.parametrize(("header", "reason"), REFUSALS)
def test_can_render_refuses(header: Dataset, reason: str) -> None:
    said = can_render(header)
    assert said is not None and reason in said
    with pytest.raises(RenderError, match=reason):
        frame = np.zeros((4, 4), dtype=np.uint8)
        render_frames(
            header,
            [(1, frame, PixelDescription(4, 4, 1, 8, 8, 0, "MONOCHROME2", 1))],
            parse_render_query({}, "image/png"),
        )


def test_video_is_refused() -> None:
    header, _ = load("ct_src_evrle.dcm")
    video = Dataset()
    video.update(header)
    video.file_meta = pydicom.dataset.FileMetaDataset()
    video.file_meta.TransferSyntaxUID = pydicom.uid.UID("1.2.840.10008.1.2.4.102")
    assert "video" in (can_render(video) or "")


def test_several_frames_need_gif() -> None:
    header, frames = load("xa_multiframe.dcm", (1, 2))
    with pytest.raises(RenderError, match="image/gif"):
        render_frames(header, frames, parse_render_query({}, "image/jpeg"))


def test_ybr_left_by_the_decoder_is_converted() -> None:
    """A decoder that returns YBR_FULL (and says so) still gives RGB output."""
    header = bare(**{**IMAGE, "SamplesPerPixel": 3}, PhotometricInterpretation="YBR_FULL")
    ybr = np.zeros((4, 4, 3), dtype=np.uint8)
    ybr[...] = (76, 85, 255)  # red in YBR_FULL
    description = PixelDescription(4, 4, 3, 8, 8, 0, "YBR_FULL", 1)
    data = render_frames(header, [(1, ybr, description)], parse_render_query({}, "image/png"))
    got = np.asarray(Image.open(io.BytesIO(data)).getpixel((1, 1)), dtype=int)
    assert np.abs(got - (255, 0, 0)).max() <= 2


def test_multiframe_gif_from_real_data() -> None:
    """XA cine: three frames, each shown for Frame Time (66.7 ms; GIF counts 1/100 s)."""
    header, frames = load("xa_multiframe.dcm", (1, 2, 3))
    data = render_frames(header, frames, parse_render_query({"viewport": "128,128"}, "image/gif"))
    image = Image.open(io.BytesIO(data))
    assert getattr(image, "n_frames", 1) == 3
    durations = []
    for index in range(3):
        image.seek(index)
        durations.append(image.info["duration"])
    assert all(60 <= d <= 70 for d in durations)
    assert image.size == (128, 128)
