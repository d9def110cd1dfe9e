"""Seedable synthetic DICOM: realistic enough CT studies for load and scale tests.

Images are 16-bit CT slices (a smooth phantom plus noise, so compressed sizes are realistic),
with proper UIDs, non-ASCII patient names and dates spread over years.
"""

from __future__ import annotations

import io
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

PATIENT_NAMES = (
    "Müller^Jürgen",
    "Nuñez^María José",
    "Øster^Søren",
    "Dubois^Élodie",
    "Smith^John",
    "Kowalski^Łukasz",
    "Yılmaz^Ayşe",  # noqa: RUF001 - a real Turkish name
    "Tanaka^Hiro",
)


@dataclass(frozen=True)
class SyntheticInstance:
    study_uid: str
    series_uid: str
    sop_uid: str
    data: bytes


#: Namespace of the name-based UUIDs behind ``derived_uid`` (any fixed UUID would do).
UID_NAMESPACE = uuid.UUID("6f0d3c52-1f55-4a7e-9d2f-2f1b7e0a9c41")


def derived_uid(*parts: object) -> str:
    """A UID under the ``2.25`` root (PS3.5 §B.2), from a name-based UUID of ``parts``.

    The same parts (seed, kind, counters) always give the same UID, so a seed reproduces a
    dataset exactly; ``2.25.`` plus at most 39 digits stays under the 64-character limit.
    """
    name = "/".join(str(part) for part in parts)
    return f"2.25.{uuid.uuid5(UID_NAMESPACE, name).int}"


def phantom(rows: int, columns: int, rng: np.random.Generator, z: float) -> np.ndarray:
    """A CT-like slice (air, soft tissue, a moving bone disc, noise) as 12-bit unsigned values."""
    y, x = np.mgrid[0:rows, 0:columns]
    cy, cx = rows / 2, columns / 2
    r = np.hypot((y - cy) / (rows * 0.42), (x - cx) / (columns * 0.36))
    image = np.where(r < 1.0, 40.0, -1000.0)
    bone = np.hypot((y - cy) / (rows * 0.08), (x - cx - columns * 0.1 * np.sin(z)) / (rows * 0.08))
    image = np.where(bone < 1.0, 700.0, image)
    image += rng.normal(0, 12, size=image.shape)
    pixels: np.ndarray = np.clip(image + 1024, 0, 4095).astype(np.uint16)
    return pixels


def ct_series(
    count: int,
    *,
    seed: int = 0,
    rows: int = 512,
    columns: int = 512,
    study_uid: str | None = None,
) -> Iterator[SyntheticInstance]:
    """``count`` slices of one CT series, as PS3.10 bytes (Explicit VR Little Endian)."""
    rng = np.random.default_rng(seed)
    pick = random.Random(seed)
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    frame_of_reference = generate_uid()
    patient = pick.choice(PATIENT_NAMES)
    patient_id = f"P{pick.randrange(10**6):06d}"
    year = pick.randrange(2005, 2026)
    study_date = f"{year}{pick.randrange(1, 13):02d}{pick.randrange(1, 29):02d}"
    for index in range(count):
        sop_uid = generate_uid()
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_of_reference
        ds.Modality = "CT"
        ds.PatientName = patient
        ds.PatientID = patient_id
        ds.PatientBirthDate = f"{year - pick.randrange(20, 90)}0101"
        ds.PatientSex = pick.choice("MF")
        ds.StudyDate = study_date
        ds.StudyTime = "101500"
        ds.AccessionNumber = f"A{seed:04d}{pick.randrange(10**5):05d}"
        ds.StudyID = "1"
        ds.StudyDescription = "CT Thorax"
        ds.SeriesDescription = "Axial 1mm"
        ds.ReferringPhysicianName = "Doe^Jane"
        ds.SeriesNumber = 1
        ds.InstanceNumber = index + 1
        ds.ImagePositionPatient = [-250.0, -250.0, float(index)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [0.98, 0.98]
        ds.SliceThickness = 1.0
        ds.Rows, ds.Columns = rows, columns
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.PixelRepresentation = 0
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.PixelData = phantom(rows, columns, rng, index / 10).tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        yield SyntheticInstance(study_uid, series_uid, sop_uid, buffer.getvalue())
