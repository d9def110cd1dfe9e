"""Extra pydicom decoding plugins, registered as data (STYLE: codecs as a plugin table).

pydicom's own plugins cover every transfer syntax Tessera decodes except JPEG Extended with
12-bit samples (PS3.5 §8.2.1, 1.2.840.10008.1.2.4.51): GDCM's plugin refuses 12-bit precision
and Pillow's libjpeg is 8-bit only, while the GPL pylibjpeg-libjpeg is deliberately not
installed. imagecodecs (BSD-3; libjpeg-turbo 3 underneath) decodes 12-bit JPEG, so it is added
as the last plugin for that syntax: used only when the others fail.

This module doubles as the plugin (pydicom imports it by name and calls ``is_available`` and
``_decode_frame``).
"""

from __future__ import annotations

import contextlib
from typing import Any

from pydicom import uid
from pydicom.pixels.decoders.base import JPEGExtended12BitDecoder

PLUGIN_LABEL = "tessera-imagecodecs"

DECODER_DEPENDENCIES = {uid.JPEGExtended12Bit: ("imagecodecs",)}

#: (decoder, plugin label, module, function) — appended to pydicom's plugin lists.
EXTRA_DECODER_PLUGINS = ((JPEGExtended12BitDecoder, PLUGIN_LABEL, __name__, "_decode_frame"),)


def is_available(transfer_syntax_uid: str) -> bool:
    if transfer_syntax_uid not in DECODER_DEPENDENCIES:
        return False
    try:
        import imagecodecs
    except ImportError:
        return False
    return bool(imagecodecs.JPEG8.available)


def _decode_frame(src: bytes, runner: Any) -> bytes:
    """Decode one JPEG codestream to little-endian samples, interleaved (pydicom's contract
    for decoding plugins). libjpeg-turbo converts YCbCr to RGB; the runner is told so."""
    import imagecodecs

    array = imagecodecs.jpeg8_decode(src)
    if array.ndim == 3 and runner.photometric_interpretation.startswith("YBR"):
        runner.set_option("photometric_interpretation", "RGB")
    return bytes(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())


def register() -> None:
    """Add the extra plugins once per process (pydicom refuses a repeated label)."""
    for decoder, label, module, function in EXTRA_DECODER_PLUGINS:
        with contextlib.suppress(ValueError):  # already registered
            decoder.add_plugin(label, (module, function))
