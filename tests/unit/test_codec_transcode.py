"""The codec's transcoding core on the shared test data and pydicom's edge cases.

Lossless transcodes must decode (with pydicom) to exactly the pixels pydicom decodes from the
original; JPEG Baseline keeps the shape; conversions that cannot be done raise
``ConversionError`` with a reason, never anything else.
"""

from __future__ import annotations

import io
from functools import cache
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from tests.support.dicom_files import DicomFile, shared_files

from tessera_codec import plugins
from tessera_codec.pixels import ConversionError, decodable_syntaxes, encodable_syntaxes
from tessera_codec.transcode import Source, transcode_frames, transcode_instance
from tessera_store.analysis import analyze_instance

plugins.register()

EXPLICIT = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"
LOSSLESS_TARGETS = [
    EXPLICIT,
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
]
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
UNDECODABLE = {"1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.102"}
#: pydicom's edge cases: big endian (8-bit OW, palette), 32-bit RGB, YBR_FULL_422, 12-bit
#: JPEG Extended, bit-packed, float, odd-sized.
PYDICOM_EDGE_CASES = [
    "OBXXXX1A_expb.dcm",
    "SC_rgb_small_odd_big_endian.dcm",
    "SC_rgb_32bit_2frame.dcm",
    "SC_ybr_full_422_uncompressed.dcm",
    "JPEG-lossy.dcm",
    "liver.dcm",
    "SC_rgb_small_odd.dcm",
    "emri_small_RLE.dcm",
    "JPGExtended.dcm",
]


#: Larger files are transcoded to Explicit VR Little Endian only (test time).
LARGE = 1024 * 1024


@cache
def _files() -> tuple[DicomFile | str, ...]:
    # The wsi-conformant levels hold the same pixels as the wsi ones.
    shared = [f for f in shared_files() if not f.path.parent.name.startswith("wsi-")]
    return (*shared, *PYDICOM_EDGE_CASES)


def _load(entry: DicomFile | str) -> tuple[bytes, Source]:
    if isinstance(entry, str):
        path = get_testdata_file(entry)
        assert path is not None
        data = Path(path).read_bytes()
    else:
        data = entry.path.read_bytes()
    analysis = analyze_instance(io.BytesIO(data), size=len(data), expected_study_uid=None)
    return data, Source("object", len(data), analysis.transfer_syntax_uid, analysis.frames)


def _name(entry: DicomFile | str) -> str:
    return entry if isinstance(entry, str) else entry.path.name


@cache
def _reference(name: str) -> np.ndarray | None:
    entry = next(e for e in _files() if _name(e) == name)
    data, source = _load(entry)
    ds = pydicom.dcmread(io.BytesIO(data))
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        return None
    if source.transfer_syntax_uid in UNDECODABLE | {"1.2.840.10008.1.2.4.55"}:
        return None
    return ds.pixel_array


@pytest.mark.parametrize("entry", _files(), ids=_name)
def test_lossless_transcodes_keep_the_pixels(entry: DicomFile | str) -> None:
    data, source = _load(entry)
    reference = _reference(_name(entry))
    for target in LOSSLESS_TARGETS if len(data) < LARGE else [EXPLICIT]:
        out = io.BytesIO()
        try:
            index = transcode_instance(io.BytesIO(data), source, target, out)
        except ConversionError as exc:
            # Only what the target cannot hold, or what cannot be decoded at all.
            assert source.transfer_syntax_uid in UNDECODABLE or reference is not None, exc
            assert target != EXPLICIT or source.transfer_syntax_uid in UNDECODABLE, exc
            continue
        result = pydicom.dcmread(io.BytesIO(out.getvalue()))
        assert result.file_meta.TransferSyntaxUID == target
        assert result.SOPInstanceUID == pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID
        if reference is None:
            continue
        assert index is not None
        assert np.array_equal(result.pixel_array, reference), target


@pytest.mark.parametrize(
    "name",
    ["us8_jpeg_baseline.dcm", "us8_rle.dcm", "us_rgb_htj2k_lossless.dcm", "xa_multiframe.dcm"],
)
def test_jpeg_baseline_of_8_bit_images(name: str) -> None:
    entry = next(f for f in shared_files() if f.path.name == name)
    data, source = _load(entry)
    out = io.BytesIO()
    transcode_instance(io.BytesIO(data), source, JPEG_BASELINE, out)
    result = pydicom.dcmread(io.BytesIO(out.getvalue()))
    reference = _reference(name)
    assert reference is not None
    assert result.pixel_array.shape == reference.shape
    assert result.LossyImageCompression == "01"
    difference = np.abs(result.pixel_array.astype(int) - reference.astype(int))
    assert difference.mean() < 4


def test_jpeg_baseline_refuses_16_bit() -> None:
    entry = next(f for f in shared_files() if f.path.name == "ct_src_evrle.dcm")
    data, source = _load(entry)
    with pytest.raises(ConversionError, match="8-bit"):
        transcode_instance(io.BytesIO(data), source, JPEG_BASELINE, io.BytesIO())


def test_single_frames_match_the_whole_transcode() -> None:
    entry = next(f for f in shared_files() if f.path.name == "emri_htj2k_lossless.dcm")
    data, source = _load(entry)
    frames = dict(transcode_frames(io.BytesIO(data), source, EXPLICIT, [10, 1, 5]))
    reference = _reference("emri_htj2k_lossless.dcm")
    assert reference is not None
    for number, raw in frames.items():
        pixels = np.frombuffer(raw, dtype=reference.dtype.newbyteorder("<")).reshape(64, 64)
        assert np.array_equal(pixels, reference[number - 1])
    with pytest.raises(ConversionError, match="does not exist"):
        list(transcode_frames(io.BytesIO(data), source, EXPLICIT, [11]))


def test_capabilities_cover_the_test_data() -> None:
    decodable = set(decodable_syntaxes())
    for entry in shared_files():
        assert entry.transfer_syntax_uid in decodable | UNDECODABLE
    assert set(encodable_syntaxes()) == {EXPLICIT, IMPLICIT, JPEG_BASELINE, *LOSSLESS_TARGETS}


def test_garbage_is_a_conversion_error() -> None:
    entry = next(f for f in shared_files() if f.path.name == "ct_jpegls_lossless.dcm")
    data, source = _load(entry)
    assert source.frames is not None
    offset, length = source.frames.fragments[0]
    broken = data[:offset] + b"\xff\xd8" + bytes(length - 2) + data[offset + length :]
    with pytest.raises(ConversionError):
        transcode_instance(io.BytesIO(broken), source, EXPLICIT, io.BytesIO())
