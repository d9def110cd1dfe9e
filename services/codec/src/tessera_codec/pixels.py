"""Decode one frame of pixel data and encode it in another transfer syntax (PS3.5 §8, Annex A.4).

Pure and synchronous (numpy, pydicom's pixel pipeline, imagecodecs): the codec service runs
it in worker processes. Decoding goes through pydicom's ``Decoder`` for the syntax, so a
transcoded frame holds exactly the pixels pydicom itself would show for the original (YBR
colour converted to RGB, as ``Dataset.pixel_array`` does). Encoders are a table from transfer
syntax to function, in the manner of pydicom's plugin lists.

A conversion that cannot be done raises ``ConversionError`` with a reason for the client
(e.g. 16-bit samples asked for as JPEG Baseline, which holds 8 bits, PS3.5 §8.2.1).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from pydicom import uid
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.encoders.base import get_encoder
from pydicom.pixels.utils import pack_bits

from . import plugins

#: JPEG Full Progression, Non-Hierarchical (Process 10-12), retired (PS3.5 Annex A.4.1);
#: pydicom has no decoder for it, imagecodecs (libjpeg-turbo) decodes it.
JPEG_PROGRESSIVE = "1.2.840.10008.1.2.4.55"

#: Transfer syntaxes whose Pixel Data is native (PS3.5 §8.1.1); Deflated is native inside.
NATIVE_SYNTAXES = frozenset(
    {
        uid.ImplicitVRLittleEndian,
        uid.ExplicitVRLittleEndian,
        uid.ExplicitVRBigEndian,
        uid.DeflatedExplicitVRLittleEndian,
    }
)

#: What the derived object's dataset may be encoded in.
NATIVE_TARGETS = frozenset({uid.ImplicitVRLittleEndian, uid.ExplicitVRLittleEndian})

#: Lossy targets and the Lossy Image Compression Method (0028,2114) they record (PS3.3
#: §C.7.6.1.1.5.1).
LOSSY_METHODS: dict[str, str] = {str(uid.JPEGBaseline8Bit): "ISO_10918_1"}

#: Quality of JPEG Baseline encodes (libjpeg scale 1-100).
JPEG_QUALITY = 90


class ConversionError(ValueError):
    """The pixel data cannot be converted as asked; ``str()`` says why."""


@dataclass(frozen=True, slots=True)
class PixelDescription:
    """The Image Pixel Description attributes that describe a frame (PS3.3 §C.7.6.3)."""

    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric_interpretation: str
    number_of_frames: int
    planar_configuration: int = 0
    pixel_keyword: str = "PixelData"
    pixel_vr: str | None = None

    @classmethod
    def from_dataset(
        cls, ds: Dataset, pixel_keyword: str = "PixelData", pixel_vr: str | None = None
    ) -> PixelDescription:
        try:
            frames = int(ds.get("NumberOfFrames") or 1)
            return cls(
                rows=int(ds.Rows),
                columns=int(ds.Columns),
                samples_per_pixel=int(ds.get("SamplesPerPixel", 1)),
                bits_allocated=int(ds.BitsAllocated),
                bits_stored=int(ds.get("BitsStored", ds.BitsAllocated)),
                pixel_representation=int(ds.get("PixelRepresentation", 0)),
                photometric_interpretation=str(ds.get("PhotometricInterpretation", "")).strip(),
                number_of_frames=max(frames, 1),
                planar_configuration=int(ds.get("PlanarConfiguration", 0) or 0),
                pixel_keyword=pixel_keyword,
                pixel_vr=pixel_vr,
            )
        except (AttributeError, TypeError, ValueError) as exc:
            raise ConversionError(
                "the Image Pixel module is incomplete or invalid (PS3.3 §C.7.6.3)"
            ) from exc

    def options(self, **overrides: Any) -> dict[str, Any]:
        """pydicom's pixel options for these attributes."""
        options: dict[str, Any] = {
            "rows": self.rows,
            "columns": self.columns,
            "samples_per_pixel": self.samples_per_pixel,
            "bits_allocated": self.bits_allocated,
            "bits_stored": self.bits_stored,
            "pixel_representation": self.pixel_representation,
            "photometric_interpretation": self.photometric_interpretation,
            "number_of_frames": self.number_of_frames,
            "pixel_keyword": self.pixel_keyword,
        }
        if self.samples_per_pixel > 1:
            options["planar_configuration"] = self.planar_configuration
        if self.pixel_vr:
            options["pixel_vr"] = self.pixel_vr  # big endian 8-bit OW is swapped by words
        options.update(overrides)
        return options

    def updated(self, meta: Mapping[str, Any]) -> PixelDescription:
        """This description after a decoder reported what its output holds."""
        changes = {
            name: meta[name]
            for name in (
                "rows",
                "columns",
                "samples_per_pixel",
                "bits_allocated",
                "bits_stored",
                "pixel_representation",
                "photometric_interpretation",
                "planar_configuration",
            )
            if name in meta
        }
        return replace(self, **changes)


def can_decode(transfer_syntax_uid: str) -> bool:
    if transfer_syntax_uid == JPEG_PROGRESSIVE:
        return _imagecodecs_has("JPEG8")
    try:
        return bool(get_decoder(transfer_syntax_uid).is_available)
    except NotImplementedError:
        return False


def can_encode(transfer_syntax_uid: str) -> bool:
    encoder = ENCODERS.get(transfer_syntax_uid)
    return encoder is not None and encoder.available()


def decode_frame(
    data: bytes,
    transfer_syntax_uid: str,
    description: PixelDescription,
    *,
    index: int | None = None,
) -> tuple[np.ndarray, PixelDescription]:
    """The pixels of one frame and the description that fits them.

    ``data`` is one frame's bytes (a codestream, or native samples) unless ``index`` is given:
    then it holds all ``description.number_of_frames`` native frames (bit-packed data, whose
    frames need not start on a byte boundary, PS3.5 §8.1.1) and frame ``index`` is decoded.
    """
    if transfer_syntax_uid == JPEG_PROGRESSIVE:
        return _decode_progressive(data, description)
    try:
        decoder = get_decoder(transfer_syntax_uid)
    except NotImplementedError as exc:
        raise ConversionError(f"no decoder for transfer syntax {transfer_syntax_uid}") from exc
    if not decoder.is_available:
        raise ConversionError(f"the decoder for {transfer_syntax_uid} is not installed")
    if transfer_syntax_uid in NATIVE_SYNTAXES:
        frames = description.number_of_frames if index is not None else 1
        source: bytes = data
    else:
        frames, source = 1, encapsulate([data])
    try:
        array, meta = decoder.as_array(
            source, index=index or 0, **description.options(number_of_frames=frames)
        )
    except (RuntimeError, ValueError, NotImplementedError, KeyError) as exc:
        raise ConversionError(f"the pixel data could not be decoded ({_first_line(exc)})") from exc
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return array, description.updated(meta)


def _decode_progressive(
    data: bytes, description: PixelDescription
) -> tuple[np.ndarray, PixelDescription]:
    import imagecodecs

    try:
        array = imagecodecs.jpeg8_decode(data)
    except Exception as exc:
        raise ConversionError(f"the JPEG frame could not be decoded ({exc})") from exc
    colour = array.ndim == 3
    interpretation = "RGB" if colour else description.photometric_interpretation
    return array, replace(
        description,
        photometric_interpretation=interpretation,
        bits_allocated=8 * array.dtype.itemsize,
        samples_per_pixel=3 if colour else 1,
    )


# --- encoders ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FrameEncoder:
    """Encodes one frame (pixels as decoded) to ``(bytes, description of the result)``."""

    encode: Callable[[np.ndarray, PixelDescription], tuple[bytes, PixelDescription]]
    available: Callable[[], bool]


def native_bytes(array: np.ndarray, description: PixelDescription) -> bytes:
    """Little-endian native samples, colour by pixel (Planar Configuration 0), PS3.5 §8.1.1.
    Bit-packed data (Bits Allocated 1) is packed per frame here; ``pack_frames`` packs a run."""
    if description.bits_allocated == 1:
        return bytes(pack_bits(array, pad=False))
    if array.dtype.kind == "f":
        dtype = np.dtype(f"<f{array.dtype.itemsize}")
    else:
        kind = "i" if description.pixel_representation else "u"
        dtype = np.dtype(f"<{kind}{description.bits_allocated // 8}")
    return bytes(np.ascontiguousarray(array, dtype=dtype).tobytes())


def _encode_native(
    array: np.ndarray, description: PixelDescription
) -> tuple[bytes, PixelDescription]:
    return native_bytes(array, description), replace(description, planar_configuration=0)


def _pydicom_encoder(transfer_syntax_uid: str, plugin: str) -> FrameEncoder:
    """pydicom's encoder for the syntax, with one named plugin: GDCM's RLE encoder aborts the
    process on some inputs (a C++ exception nobody catches), so it is never chosen."""

    def encode(array: np.ndarray, description: PixelDescription) -> tuple[bytes, PixelDescription]:
        _require_integers(array, transfer_syntax_uid)
        encoder = get_encoder(transfer_syntax_uid)
        try:
            data = encoder.encode(
                array,
                encoding_plugin=plugin,
                **description.options(number_of_frames=1, planar_configuration=0),
            )
        except (RuntimeError, ValueError) as exc:
            raise ConversionError(
                f"the frame cannot be encoded as {transfer_syntax_uid} ({_first_line(exc)})"
            ) from exc
        return bytes(data), replace(description, planar_configuration=0)

    def available() -> bool:
        return plugin in get_encoder(transfer_syntax_uid).available_plugins

    return FrameEncoder(encode, available)


def _encode_htj2k(
    array: np.ndarray, description: PixelDescription
) -> tuple[bytes, PixelDescription]:
    """HTJ2K Lossless (PS3.5 §8.2.14; ISO/IEC 15444-15) with OpenJPH through imagecodecs:
    reversible 5/3 wavelet, no colour transform (Photometric Interpretation stays)."""
    import imagecodecs

    _require_integers(array, uid.HTJ2KLossless)
    if description.bits_stored > 16 or description.samples_per_pixel not in (1, 3):
        raise ConversionError("HTJ2K encoding here takes 1 or 3 samples of up to 16 bits")
    if description.photometric_interpretation.startswith("YBR_FULL"):
        raise ConversionError("YBR_FULL pixel data is not encoded as HTJ2K here")
    try:
        data = imagecodecs.htj2k_encode(array, reversible=True, rgb=False)
    except Exception as exc:
        raise ConversionError(f"the frame cannot be encoded as HTJ2K ({exc})") from exc
    return bytes(data), replace(description, planar_configuration=0)


def _encode_jpeg_baseline(
    array: np.ndarray, description: PixelDescription
) -> tuple[bytes, PixelDescription]:
    """JPEG Baseline (Process 1, PS3.5 §8.2.1): 8-bit unsigned samples only; colour is stored
    as YCbCr with 4:2:2 subsampling, so Photometric Interpretation becomes YBR_FULL_422."""
    import imagecodecs

    if (
        description.bits_allocated != 8
        or description.bits_stored > 8
        or description.pixel_representation != 0
        or array.dtype != np.uint8
    ):
        raise ConversionError(
            "JPEG Baseline holds 8-bit unsigned samples; this pixel data has "
            f"{description.bits_stored}-bit samples (ask for a lossless syntax instead)"
        )
    if description.samples_per_pixel == 1:
        data = imagecodecs.jpeg8_encode(array, level=JPEG_QUALITY)
        return bytes(data), description
    if description.samples_per_pixel != 3 or description.photometric_interpretation != "RGB":
        raise ConversionError(
            f"JPEG Baseline encoding takes MONOCHROME or RGB pixel data, not "
            f"{description.photometric_interpretation}"
        )
    data = imagecodecs.jpeg8_encode(
        np.ascontiguousarray(array),
        level=JPEG_QUALITY,
        colorspace="rgb",
        outcolorspace="ycbcr",
        subsampling="422",
    )
    return bytes(data), replace(
        description, photometric_interpretation="YBR_FULL_422", planar_configuration=0
    )


def _require_integers(array: np.ndarray, transfer_syntax_uid: str) -> None:
    if array.dtype.kind not in "iu":
        raise ConversionError(
            f"floating point pixel data cannot be encoded as {transfer_syntax_uid}; "
            "ask for Explicit VR Little Endian"
        )


def _imagecodecs_has(codec: str) -> bool:
    try:
        import imagecodecs
    except ImportError:
        return False
    return bool(getattr(imagecodecs, codec).available)


#: Transfer syntax UID -> frame encoder. The issue's list: Explicit VR Little Endian, JPEG-LS
#: Lossless, JPEG 2000 Lossless, HTJ2K Lossless, RLE Lossless, JPEG Baseline; and Implicit VR
#: Little Endian, which costs nothing more.
ENCODERS: dict[str, FrameEncoder] = {
    uid.ExplicitVRLittleEndian: FrameEncoder(_encode_native, lambda: True),
    uid.ImplicitVRLittleEndian: FrameEncoder(_encode_native, lambda: True),
    uid.RLELossless: _pydicom_encoder(uid.RLELossless, "pylibjpeg"),
    uid.JPEGLSLossless: _pydicom_encoder(uid.JPEGLSLossless, "pyjpegls"),
    uid.JPEG2000Lossless: _pydicom_encoder(uid.JPEG2000Lossless, "pylibjpeg"),
    uid.HTJ2KLossless: FrameEncoder(_encode_htj2k, lambda: _imagecodecs_has("HTJ2K")),
    uid.JPEGBaseline8Bit: FrameEncoder(_encode_jpeg_baseline, lambda: _imagecodecs_has("JPEG8")),
}


def encode_frame(
    array: np.ndarray, description: PixelDescription, transfer_syntax_uid: str
) -> tuple[bytes, PixelDescription]:
    encoder = ENCODERS.get(transfer_syntax_uid)
    if encoder is None or not encoder.available():
        raise ConversionError(f"Tessera cannot encode transfer syntax {transfer_syntax_uid}")
    return encoder.encode(array, description)


def decodable_syntaxes() -> list[str]:
    """Every transfer syntax this process can decode, for the capabilities message."""
    plugins.register()
    known = [
        uid.ImplicitVRLittleEndian,
        uid.ExplicitVRLittleEndian,
        uid.ExplicitVRBigEndian,
        uid.DeflatedExplicitVRLittleEndian,
        uid.JPEGBaseline8Bit,
        uid.JPEGExtended12Bit,
        JPEG_PROGRESSIVE,
        uid.JPEGLossless,
        uid.JPEGLosslessSV1,
        uid.JPEGLSLossless,
        uid.JPEGLSNearLossless,
        uid.JPEG2000Lossless,
        uid.JPEG2000,
        uid.HTJ2KLossless,
        uid.HTJ2KLosslessRPCL,
        uid.HTJ2K,
        uid.RLELossless,
    ]
    return [str(ts) for ts in known if can_decode(ts)]


def encodable_syntaxes() -> list[str]:
    return [str(ts) for ts in ENCODERS if can_encode(ts)]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
