"""Pixel-level steps: stored values, Modality LUT, functional groups, colour and palettes."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset

from tessera_render.colour import colour_to_rgb, ybr_to_rgb
from tessera_render.functional_groups import FrameAttributes
from tessera_render.greyscale import stored_frame
from tessera_render.modality import modality_transform
from tessera_render.palette import apply_palette, expand_segments, palette_tables

#: (decoded values, dtype, bits stored, signed) → stored values
STORED = [
    pytest.param([0, 4095], "u2", 12, False, [0, 4095], id="unsigned-12-clean"),
    pytest.param(
        [0xF000 | 5, 0x1FFF], "u2", 12, False, [5, 4095], id="unsigned-12-high-bits-masked"
    ),
    pytest.param([-2048, 2047], "i2", 12, True, [-2048, 2047], id="signed-12-clean"),
    pytest.param([0x0FFF, 0x0800], "u2", 12, True, [-1, -2048], id="signed-12-not-sign-extended"),
    pytest.param([0x3FFF, 0x2000, 5], "i2", 14, True, [-1, -8192, 5], id="signed-14-in-int16"),
    pytest.param([1, 0], "u1", 1, False, [1, 0], id="one-bit"),
]


@pytest.mark.parametrize(("values", "dtype", "bits", "signed", "expected"), STORED)
def test_stored_values(
    values: list[int], dtype: str, bits: int, signed: bool, expected: list[int]
) -> None:
    frame = stored_frame(np.array(values, dtype=dtype), bits, signed)
    assert frame.values.tolist() == expected
    assert (frame.low, frame.high) == (min(expected), max(expected))


def test_modality_lut_sequence_clamps() -> None:
    item = Dataset()
    item.LUTDescriptor = [4, 10, 16]
    item.LUTData = [100, 200, 300, 400]
    ds = Dataset()
    ds.ModalityLUTSequence = [item]
    transform = modality_transform(FrameAttributes(ds, 1))
    assert transform.apply(np.array([0, 10, 11, 13, 99])).tolist() == [100, 100, 200, 400, 400]


def test_rescale() -> None:
    ds = Dataset()
    ds.RescaleSlope, ds.RescaleIntercept = "0.5", "-1024"
    assert modality_transform(FrameAttributes(ds, 1)).apply(np.array([0, 2048])).tolist() == [
        -1024,
        0,
    ]


def functional_groups() -> Dataset:
    ds = Dataset()
    ds.RescaleIntercept = "0"  # top level: overridden by the groups
    shared, frame_1, frame_2 = Dataset(), Dataset(), Dataset()
    transform = Dataset()
    transform.RescaleSlope, transform.RescaleIntercept = "1", "-1024"
    shared.PixelValueTransformationSequence = [transform]
    voi_1, voi_2 = Dataset(), Dataset()
    voi_1.WindowCenter, voi_1.WindowWidth = "40", "400"
    voi_2.WindowCenter, voi_2.WindowWidth = "-600", "1500"
    frame_1.FrameVOILUTSequence = [voi_1]
    frame_2.FrameVOILUTSequence = [voi_2]
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.PerFrameFunctionalGroupsSequence = [frame_1, frame_2]
    return ds


def test_functional_groups_per_frame_then_shared_then_top_level() -> None:
    ds = functional_groups()
    first, second = FrameAttributes(ds, 1), FrameAttributes(ds, 2)
    assert (first.get("WindowCenter"), second.get("WindowCenter")) == ("40", "-600")
    assert first.get("RescaleIntercept") == "-1024"
    assert first.get("Modality", "none") == "none"


#: YBR_FULL (PS3.3 §C.7.6.3.1.2) → RGB
YBR = [
    pytest.param((255, 128, 128), False, (255, 255, 255), id="full-white"),
    pytest.param((0, 128, 128), False, (0, 0, 0), id="full-black"),
    pytest.param((76, 85, 255), False, (254, 0, 0), id="full-red"),
    pytest.param((235, 128, 128), True, (255, 255, 255), id="partial-white"),
    pytest.param((16, 128, 128), True, (0, 0, 0), id="partial-black"),
]


@pytest.mark.parametrize(("ybr", "partial", "rgb"), YBR)
def test_ybr_to_rgb(ybr: tuple[int, int, int], partial: bool, rgb: tuple[int, int, int]) -> None:
    out = ybr_to_rgb(np.array([[ybr]], dtype=np.uint8), partial)
    assert np.abs(out[0, 0].astype(int) - rgb).max() <= 1


def test_colour_planes_and_16_bits() -> None:
    planes = np.zeros((3, 2, 2), dtype=np.uint16)
    planes[0] = 65535
    out = colour_to_rgb(planes, "RGB", 16)
    assert out.shape == (2, 2, 3) and out[0, 0].tolist() == [255, 0, 0]


SEGMENTS = [
    pytest.param([0, 3, 1, 2, 3], [1, 2, 3], id="discrete"),
    pytest.param([0, 1, 0, 1, 4, 100], [0, 25, 50, 75, 100], id="discrete-then-linear"),
    pytest.param([0, 2, 7, 8, 2, 1, 0, 0], [7, 8, 7, 8], id="indirect-copies-segments"),
]


@pytest.mark.parametrize(("words", "expected"), SEGMENTS)
def test_segmented_palette(words: list[int], expected: list[int]) -> None:
    assert expand_segments(np.array(words)).tolist() == expected


def test_palette_lookup() -> None:
    ds = Dataset()
    for channel, values in (("Red", [0, 65535]), ("Green", [65535, 0]), ("Blue", [0, 0])):
        setattr(ds, f"{channel}PaletteColorLookupTableDescriptor", [2, 5, 16])
        setattr(ds, f"{channel}PaletteColorLookupTableData", np.array(values, "<u2").tobytes())
    out = apply_palette(np.array([[0, 5, 6, 9]], dtype=np.uint8), palette_tables(ds))
    assert out[0].tolist() == [[0, 255, 0], [0, 255, 0], [255, 0, 0], [255, 0, 0]]
