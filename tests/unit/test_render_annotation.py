"""Burned-in annotation (PS3.18 §8.3.5.1.2): text in the corners, the centre untouched."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset

from tessera_codec.pixels import PixelDescription
from tessera_common.rendering import parse_render_query
from tessera_render.annotation import patient_lines, technique_lines
from tessera_render.functional_groups import FrameAttributes
from tessera_render.pipeline import render_frames


def header(name: str = "Doe^Jane", charset: str | None = None) -> Dataset:
    ds = Dataset()
    ds.Rows, ds.Columns = 256, 256
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.PixelRepresentation = 1, 8, 8, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    if charset:
        ds.SpecificCharacterSet = charset
    ds.PatientName = name
    ds.PatientID = "P-0001"
    ds.PatientBirthDate = "19700102"
    ds.PatientSex = "F"
    ds.Modality = "CT"
    ds.KVP = "120"
    ds.Exposure = "250"
    ds.SliceThickness = "2.5"
    return ds


def render(ds: Dataset, annotation: str | None, media_type: str = "image/png") -> np.ndarray:
    grey = np.full((256, 256), 128, dtype=np.uint8)
    frames = [(1, grey, PixelDescription.from_dataset(ds))]
    query = {"annotation": annotation} if annotation else {}
    data = render_frames(ds, frames, parse_render_query(query, media_type))  # type: ignore[arg-type]
    return np.asarray(Image.open(io.BytesIO(data)))


CORNERS = [
    pytest.param("patient", (slice(0, 40), slice(0, 128)), id="patient-top-left"),
    pytest.param("technique", (slice(216, 256), slice(0, 128)), id="technique-bottom-left"),
]


@pytest.mark.parametrize(("kind", "corner"), CORNERS)
def test_annotation_marks_its_corner_only(kind: str, corner: tuple[slice, slice]) -> None:
    plain = render(header(), None)
    marked = render(header(), kind)
    assert (marked[corner] != plain[corner]).any()
    centre = (slice(96, 160), slice(96, 160))
    np.testing.assert_array_equal(marked[centre], plain[centre])
    assert marked[corner].min() == 0 and marked[corner].max() > 200  # light text on black


NAMES = [
    pytest.param("Doe^Jane", None, id="ascii"),
    pytest.param("Müller^Jürgen", "ISO_IR 100", id="latin-1"),
    pytest.param("Yamada^Tarou=山田^太郎=やまだ^たろう", "ISO_IR 192", id="japanese-utf8"),
    pytest.param("Ηλιόπουλος^Δημήτρης", "ISO_IR 126", id="greek"),
]


@pytest.mark.parametrize(("name", "charset"), NAMES)
def test_non_ascii_names_render(name: str, charset: str | None) -> None:
    out = render(header(name, charset), "patient,technique", "image/jpeg")
    assert out.shape == (256, 256)


def test_patient_lines() -> None:
    lines = patient_lines(FrameAttributes(header(), 1))
    assert lines == ["Doe Jane", "ID P-0001", "born 1970-01-02  F"]


def test_technique_lines() -> None:
    ds = header()
    ds.NumberOfFrames = 3
    lines = technique_lines(FrameAttributes(ds, 2), "C 40 W 400", 2, 3)
    assert lines == ["CT  120 kVp  250 mAs  2.5 mm", "C 40 W 400  frame 2/3"]
