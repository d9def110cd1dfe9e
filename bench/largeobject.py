"""One very large multi-frame instance, written straight into a STOW request body on disk.

Multi-frame Grayscale Word Secondary Capture (PS3.3 §A.8.3), 512x512x16-bit frames, native
Explicit VR Little Endian. The header comes from pydicom; the Pixel Data element header and the
frames are appended frame by frame, so the object is never in memory as a whole (a 1 GiB object
costs a few MiB to make). The file *is* the multipart/related body, so it can be sent with a
Content-Length and streamed from disk.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
)

from bench.synthetic import derived_uid, phantom

ROWS = COLUMNS = 512
FRAME_BYTES = ROWS * COLUMNS * 2
#: Distinct frames cycled through the object (cheap to make, not trivially compressible).
DISTINCT_FRAMES = 8
PIXEL_DATA_TAG = struct.pack("<HH", 0x7FE0, 0x0010)


@dataclass(frozen=True)
class LargeObject:
    path: Path
    content_type: str
    study_uid: str
    series_uid: str
    sop_uid: str
    frames: int
    #: size of the DICOM instance (the body adds a few bytes of multipart framing)
    instance_bytes: int


def _header(seed: int, frames: int) -> Dataset:
    sop_uid = derived_uid(seed, "large", "sop")
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SOPClassUID = MultiFrameGrayscaleWordSecondaryCaptureImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.ContentDate = "20240105"
    ds.StudyTime = ds.ContentTime = "120000"
    ds.AccessionNumber = f"L{seed:07d}"
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "Large multi-frame object"
    ds.PatientName = "Grand^Objet=大^物="
    ds.PatientID = f"LARGE{seed:05d}"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyInstanceUID = derived_uid(seed, "large", "study")
    ds.SeriesInstanceUID = derived_uid(seed, "large", "series")
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = 0x00181063  # Frame Time
    ds.FrameTime = 40.0
    ds.Rows, ds.Columns = ROWS, COLUMNS
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def write_large_object(path: Path, *, size: int, seed: int) -> LargeObject:
    """Write a STOW body holding one instance of about ``size`` bytes of pixel data."""
    frames = max(1, size // FRAME_BYTES)
    ds = _header(seed, frames)
    boundary = uuid.uuid4().hex
    rng = np.random.default_rng(seed)
    distinct = [
        phantom(ROWS, COLUMNS, rng, k / 3).astype("<u2").tobytes() for k in range(DISTINCT_FRAMES)
    ]
    pixel_bytes = frames * FRAME_BYTES
    with path.open("wb") as body:
        body.write(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
        start = body.tell()
        dcmwrite(body, ds, enforce_file_format=True)
        # Pixel Data, OW, explicit length (PS3.5 §7.1.2): tag, VR, 2 reserved bytes, length.
        body.write(PIXEL_DATA_TAG + b"OW\x00\x00" + struct.pack("<I", pixel_bytes))
        for index in range(frames):
            body.write(distinct[index % DISTINCT_FRAMES])
        instance_bytes = body.tell() - start
        body.write(f"\r\n--{boundary}--\r\n".encode())
    return LargeObject(
        path=path,
        content_type=f'multipart/related; type="application/dicom"; boundary={boundary}',
        study_uid=str(ds.StudyInstanceUID),
        series_uid=str(ds.SeriesInstanceUID),
        sop_uid=str(ds.SOPInstanceUID),
        frames=frames,
        instance_bytes=instance_bytes,
    )
