"""The DICOM JSON of common elements straight from their encoded bytes (the ingest fast path).

pydicom turns each raw element into a ``DataElement`` (value objects, validation, hooks) before
``to_json_dict``; for the plain string and number VRs that make up most of a header, that is
three quarters of the cost of an instance's metadata. ``element_json`` gives the same JSON for
those VRs by pydicom's own rules, restated here:

- string VRs (AE, AS, CS, DA, DT, TM, UI, UR, and IS/DS before they become numbers) are
  decoded as ISO 8859-1 whatever the character set; text VRs (SH, LO, UC, LT, ST, UT, PN)
  with the dataset's first encoding, provided it has only one and the value holds no escape
  sequence;
- trailing padding goes as pydicom strips it (multi-valued strings lose it at the end of the
  whole value; SH, LO, UC each value; AE spaces on both sides of each value);
- an element whose only value is empty has no Value;
- numbers are unpacked in the dataset's byte order.

Anything else (another VR, several encodings, an escape sequence, bytes that do not decode,
a number string pydicom would refuse, a length that is not a whole number of values) answers
``None`` and takes pydicom's path. ``tests/unit/test_raw_values.py`` compares the two on every
DICOM file the test corpus has.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Sequence
from typing import Any

from pydicom.dataelem import RawDataElement

_LATIN_1 = "latin_1"
_ESCAPE = 0x1B
_INTEGER_STRING = re.compile(r"[+-]?[0-9]+")
_DECIMAL_STRING = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")

#: VRs split at backslashes once the whole value's trailing padding is gone.
_STRINGS = frozenset({"AS", "CS", "DA", "DT", "TM"})
#: VRs decoded with the dataset's character set, split, each value stripped at its end.
_TEXTS = frozenset({"SH", "LO", "UC"})
#: Single-valued text VRs (backslash is a character).
_SINGLE_TEXTS = frozenset({"LT", "ST", "UT"})
#: struct formats of the binary number VRs.
_NUMBERS = {
    "US": "H",
    "SS": "h",
    "UL": "L",
    "SL": "l",
    "FL": "f",
    "FD": "d",
    "UV": "Q",
    "SV": "q",
}
#: pydicom corrects the first value of these (US or SS) when negative.
_LUT_DESCRIPTORS = frozenset({0x00281101, 0x00281102, 0x00281103, 0x00283002})
#: pydicom's names of the encodings the DICOM default repertoire and Latin-1 decode to.
_TRIVIAL_ENCODINGS = frozenset({"iso8859", "latin_1", "iso_ir_100", "utf_8", "UTF8"})


def element_json(
    raw: RawDataElement, encodings: str | Sequence[str] | None, little_endian: bool
) -> dict[str, Any] | None:
    """The DICOM JSON of ``raw`` as pydicom would make it, or None for pydicom to make it.

    ``encodings``: the Python encodings of the element's dataset (pydicom's
    ``_character_set``), None when unknown."""
    vr = raw.VR
    value = raw.value
    if vr is None or not isinstance(value, bytes) or raw.tag in _LUT_DESCRIPTORS:
        return None
    if not value:
        return {"vr": vr} if vr in _HANDLED else None
    number_format = _NUMBERS.get(vr)
    if number_format is not None:
        return _numbers(vr, value, number_format, little_endian)
    if _ESCAPE in value:
        return None
    try:
        if vr in _STRINGS:
            return _strings(vr, value.decode(_LATIN_1).rstrip(" \x00").split("\\"))
        if vr == "UI":
            return _strings(vr, value.decode(_LATIN_1).rstrip("\x00 ").split("\\"))
        if vr == "AE":
            return _strings(vr, [v.strip() for v in value.decode(_LATIN_1).split("\\")])
        if vr == "UR":
            return _strings(vr, [value.decode(_LATIN_1).rstrip()])
        if vr in ("IS", "DS"):
            return _number_strings(vr, value.decode(_LATIN_1).rstrip(" \x00").split("\\"))
        encoding = _single(encodings)
        if encoding is None:
            return None
        if vr in _TEXTS:
            return _strings(vr, [v.rstrip("\x00 ") for v in value.decode(encoding).split("\\")])
        if vr in _SINGLE_TEXTS:
            return _strings(vr, [value.decode(encoding).rstrip("\x00 ")])
        if vr == "PN":
            return _person_names(value.rstrip(b"\x00 ").decode(encoding).split("\\"))
    except UnicodeDecodeError:
        return None
    return None


_HANDLED = frozenset(
    {*_STRINGS, *_TEXTS, *_SINGLE_TEXTS, *_NUMBERS, "UI", "AE", "UR", "IS", "DS", "PN"}
)


def _single(encodings: str | Sequence[str] | None) -> str | None:
    """The one encoding of a dataset, if it is one whose decoding pydicom does not adjust."""
    if isinstance(encodings, str):
        encodings = [encodings]
    if encodings is None or len(encodings) != 1:
        return None
    return encodings[0] if encodings[0] in _TRIVIAL_ENCODINGS else None


def _strings(vr: str, values: list[str]) -> dict[str, Any]:
    if len(values) == 1:
        return {"vr": vr, "Value": values} if values[0] else {"vr": vr}
    return {"vr": vr, "Value": [v if v else None for v in values]}


def _number_strings(vr: str, values: list[str]) -> dict[str, Any] | None:
    """IS and DS as JSON numbers (PS3.18 §F.2.3), where pydicom would accept every value."""
    if len(values) == 1 and not values[0]:
        return {"vr": vr}
    result: list[Any] = []
    for value in values:
        text = value.strip()
        if not text:
            result.append(None)
        elif _INTEGER_STRING.fullmatch(text):
            result.append(int(text))
        elif vr == "DS" and _DECIMAL_STRING.fullmatch(text) and math.isfinite(float(text)):
            result.append(float(text))
        else:
            return None
    return {"vr": vr, "Value": result}


def _numbers(vr: str, value: bytes, code: str, little_endian: bool) -> dict[str, Any] | None:
    size = struct.calcsize(f"<{code}")
    if len(value) % size:
        return None
    numbers = struct.unpack(f"{'<' if little_endian else '>'}{len(value) // size}{code}", value)
    if vr in ("FL", "FD"):
        return {"vr": vr, "Value": [n if math.isfinite(n) else None for n in numbers]}
    return {"vr": vr, "Value": list(numbers)}


def _person_names(values: list[str]) -> dict[str, Any] | None:
    if len(values) == 1 and not values[0]:
        return {"vr": "PN"}
    names: list[dict[str, str]] = []
    for value in values:
        groups = value.split("=")
        while groups and not groups[-1]:
            groups.pop()  # pydicom drops empty groups at the end
        if not groups or len(groups) > 3:
            return None
        names.append(dict(zip(("Alphabetic", "Ideographic", "Phonetic"), groups, strict=False)))
    return {"vr": "PN", "Value": names}
