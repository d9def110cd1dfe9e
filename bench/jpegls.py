"""The JPEG-LS copy of the frames series (scenario ``frames_jpegls``).

Preferred: encode the native series' own pixels, JPEG-LS lossless (PS3.5 §A.4.3,
``1.2.840.10008.1.2.4.80``), with ``pyjpegls`` or ``imagecodecs`` when one is installed. Else:
clone the shared test file ``transcode/ct_jpegls_lossless.dcm`` (a 512x512 CT that dcmtk
encoded) under fresh UIDs, one per native instance. Else the group stays empty and the scenario
is reported unsupported with the reason.
"""

from __future__ import annotations

import importlib
import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.encaps import encapsulate
from pydicom.uid import UID, JPEGLSLossless

from bench.studies import RenderedInstance
from bench.synthetic import derived_uid

SHARED_FILE = "transcode/ct_jpegls_lossless.dcm"

Encoder = Callable[[np.ndarray], bytes]


@dataclass(frozen=True)
class Encoded:
    instances: list[RenderedInstance] = field(default_factory=list)
    source: str | None = None
    reason: str | None = None


def shared_testdata() -> Path:
    """``$TESSERA_SHARED_TESTDATA`` or ``shared/testdata`` beside the checkout."""
    configured = os.environ.get("TESSERA_SHARED_TESTDATA")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2] / "shared" / "testdata"


def find_encoder() -> tuple[str, Encoder] | None:
    """A JPEG-LS encoder from PyPI if one is installed: pyjpegls, then imagecodecs."""
    try:
        module = importlib.import_module("jpeg_ls")
    except ImportError:
        pass
    else:
        encode_array = module.encode_array
        return "pyjpegls", lambda pixels: bytes(encode_array(pixels))
    try:
        module = importlib.import_module("imagecodecs")
    except ImportError:
        return None
    jpegls_encode = module.jpegls_encode
    return "imagecodecs", lambda pixels: bytes(jpegls_encode(pixels))


def _new_identity(ds: pydicom.Dataset, seed: int, index: int) -> tuple[str, str, str]:
    study_uid = derived_uid(seed, "frames-jpegls", "study")
    series_uid = derived_uid(seed, "frames-jpegls", "series")
    sop_uid = derived_uid(seed, "frames-jpegls", "sop", index)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study_uid, series_uid, sop_uid
    ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    ds.SeriesDescription = "Axial 1.0 mm (frames-jpegls)"
    ds.InstanceNumber = index + 1
    return study_uid, series_uid, sop_uid


def _write(ds: pydicom.Dataset, ids: tuple[str, str, str]) -> RenderedInstance:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return RenderedInstance(*ids, modality=str(ds.Modality), data=buffer.getvalue())


def _encode(
    native: Sequence[RenderedInstance], seed: int, encoder: Encoder
) -> list[RenderedInstance]:
    encoded = []
    for index, instance in enumerate(native):
        ds = pydicom.dcmread(io.BytesIO(instance.data))
        pixels = np.frombuffer(ds.PixelData, dtype="<u2").reshape(ds.Rows, ds.Columns)
        ds.PixelData = encapsulate([encoder(pixels)])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGLSLossless
        ids = _new_identity(ds, seed, index)
        encoded.append(_write(ds, ids))
    return encoded


def _clone_shared(path: Path, count: int, seed: int) -> list[RenderedInstance]:
    template = path.read_bytes()
    clones = []
    for index in range(count):
        ds = pydicom.dcmread(io.BytesIO(template))
        ids = _new_identity(ds, seed, index)
        clones.append(_write(ds, ids))
    return clones


def encode_series(native: Sequence[RenderedInstance], *, seed: int) -> Encoded:
    """JPEG-LS instances for ``native``: encoded, or cloned from the shared test file."""
    found = find_encoder()
    if found is not None:
        name, encoder = found
        return Encoded(_encode(native, seed, encoder), source=name)
    shared = shared_testdata() / SHARED_FILE
    if shared.exists():
        return Encoded(_clone_shared(shared, len(native), seed), source=f"shared:{SHARED_FILE}")
    return Encoded(
        reason=(
            "no JPEG-LS encoder (pip install pyjpegls or imagecodecs) and no shared test file "
            f"{SHARED_FILE} (set TESSERA_SHARED_TESTDATA)"
        )
    )
