"""An instance's metadata in the DICOM JSON Model (PS3.18 Annex F), with bulk data by reference.

WADO-RS metadata (PS3.18 §10.4.1.1.2) returns every attribute except bulk data, which is
replaced by a BulkDataURI (§F.2.6). The store computes this document once, at ingest, from a
dataset parsed up to (not including) its pixel data.

pydicom converts each element (character sets, PN component groups, AT, numbers); the recursion
is done here so that every bulk value gets the path of tags and item indices that leads to it.
Odd but readable data never raises: a value that cannot be converted keeps its VR and loses its
value. Nothing here logs values (ARCHITECTURE invariant 10); pydicom's own validation warnings
can quote them, so the process that runs this keeps the ``pydicom`` logger and warnings quiet.
"""

from __future__ import annotations

import base64
import math
import re
from typing import Any

from pydicom import hooks
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset

from tessera_common.dicom_json import JsonDataset, tag_key

from . import raw_values

#: VRs whose values are bytes and may travel as bulk data (PS3.18 §F.2.7, Table F.3.1-1).
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})

_UNDEFINED_LENGTH = 0xFFFFFFFF
#: Common elements are converted from their bytes (``raw_values``), the same JSON as pydicom's
#: conversion at a quarter of the cost; False sends every one through pydicom (the tests
#: compare the two).
CONVERT_RAW = True
_INTEGER_STRING = re.compile(r"[+-]?[0-9]+")
_DECIMAL_STRING = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def bulkdata_path(instance_path: str, tag_path: str) -> str:
    """The BulkDataURI of an attribute, relative to the service root: ``tag_path`` is the
    attribute's tag, preceded by ``sequence tag/item index/`` for each enclosing sequence,
    e.g. ``00540016/0/00181072``."""
    return f"{instance_path}/bulkdata/{tag_path}"


def dataset_to_json(
    ds: Dataset,
    *,
    instance_path: str,
    bulk_threshold: int = 1024,
    pixel_data_tag: int | None = None,
    pixel_data_vr: str | None = None,
) -> JsonDataset:
    """The DICOM JSON Model of ``ds`` (without the File Meta Information, group 0002).

    Binary values (OB, OD, OF, OL, OV, OW, UN) longer than ``bulk_threshold`` bytes become
    BulkDataURIs under ``instance_path`` (relative, e.g.
    ``studies/1.2/series/3.4/instances/5.6``); shorter ones are InlineBinary (§F.2.7).
    ``pixel_data_tag``/``pixel_data_vr`` describe a pixel data element that the parse stopped
    before; it is added as a BulkDataURI (its VR is OB when encapsulated, PS3.5 §A.4).
    """
    result = _dataset_json(ds, f"{instance_path}/bulkdata/", bulk_threshold)
    if pixel_data_tag is not None:
        key = tag_key(pixel_data_tag)
        result[key] = {
            "vr": pixel_data_vr or "OW",
            "BulkDataURI": bulkdata_path(instance_path, key),
        }
    return result


def _dataset_json(ds: Dataset, prefix: str, bulk_threshold: int) -> JsonDataset:
    result: JsonDataset = {}
    # The encodings pydicom decodes this dataset's text with (its own Specific Character Set,
    # else its parent's), for the elements converted straight from their bytes.
    encodings = ds._character_set if CONVERT_RAW else None
    for tag in sorted(ds.keys()):
        if tag & 0xFFFF == 0 or tag >> 16 == 0x0002:
            # Group Length is retired outside group 0002 (PS3.5 §7.2); group 0002 is the
            # File Meta Information, not part of the dataset (PS3.10 §7.1).
            continue
        key = tag_key(tag)
        result[key] = _element_json(ds, tag, prefix + key, bulk_threshold, encodings)
    return result


def _element_json(
    ds: Dataset,
    tag: int,
    path: str,
    bulk_threshold: int,
    encodings: str | list[str] | None,
) -> dict[str, Any]:
    raw = ds.get_item(tag, keep_deferred=True)
    if isinstance(raw, RawDataElement):
        if raw.value is None and raw.length:
            # Deferred by the parser because it is large: decide from the header alone so
            # that bulk values are never read into memory.
            vr = _raw_vr(ds, raw)
            if vr in BINARY_VRS and (
                raw.length == _UNDEFINED_LENGTH or raw.length > bulk_threshold
            ):
                return {"vr": vr, "BulkDataURI": path}
        elif CONVERT_RAW:
            try:
                converted = raw_values.element_json(raw, encodings, raw.is_little_endian)
            except Exception:
                converted = None  # odd bytes: pydicom's path decides, as for any other value
            if converted is not None:
                return converted
    try:
        elem = ds[tag]
        return _converted_json(elem, path, bulk_threshold)
    except Exception:
        # A value that cannot be converted (wrong length for its VR, undecodable) is
        # reported as present but empty rather than failing the whole instance.
        return {"vr": _raw_vr(ds, raw) if isinstance(raw, RawDataElement) else "UN"}


def _converted_json(elem: DataElement, path: str, bulk_threshold: int) -> dict[str, Any]:
    vr = _single_vr(str(elem.VR))
    if vr == "SQ":
        items = [
            _dataset_json(item, f"{path}/{index}/", bulk_threshold)
            for index, item in enumerate(elem.value or [])
        ]
        return {"vr": vr, "Value": items} if items else {"vr": vr}
    if elem.is_empty:
        return {"vr": vr}
    if vr in BINARY_VRS and isinstance(elem.value, bytes | bytearray):
        if len(elem.value) > bulk_threshold:
            return {"vr": vr, "BulkDataURI": path}
        return {"vr": vr, "InlineBinary": base64.b64encode(elem.value).decode("ascii")}
    if vr in ("IS", "DS"):
        return {"vr": vr, "Value": _number_strings(elem, integer=vr == "IS")}
    converted: dict[str, Any] = elem.to_json_dict(None, 0)
    converted["vr"] = vr
    values = converted.get("Value")
    if isinstance(values, list):
        # An empty value among several is null in the JSON Model (PS3.18 §F.2.5); JSON has
        # no NaN or infinity, so such FL/FD values are null too.
        converted["Value"] = [None if _is_empty_value(v) else v for v in values]
    return converted


def _number_strings(elem: DataElement, *, integer: bool) -> list[Any]:
    """IS and DS values as JSON numbers (PS3.18 §F.2.3); a value that is not a valid number
    string for its VR is kept as the string it was, an empty one is null."""
    values = list(elem.value) if elem.VM > 1 else [elem.value]
    result: list[Any] = []
    for value in values:
        text = getattr(value, "original_string", None)
        text = (str(value) if text is None else str(text)).strip()
        if not text:
            result.append(None)
        elif _INTEGER_STRING.fullmatch(text):
            result.append(int(text))
        elif not integer and _DECIMAL_STRING.fullmatch(text) and math.isfinite(float(text)):
            result.append(float(text))
        else:
            result.append(text)
    return result


def _raw_vr(ds: Dataset, raw: RawDataElement) -> str:
    """The VR pydicom would give ``raw`` (the file's, or the dictionary's in Implicit VR),
    without reading its value."""
    data: dict[str, Any] = {}
    try:
        hooks.raw_element_vr(raw, data, encoding=None, ds=ds)
        vr = str(data["VR"])
    except Exception:
        try:
            vr = str(dictionary_VR(raw.tag))
        except KeyError:
            vr = "UN"
    return _single_vr(vr)


def _single_vr(vr: str) -> str:
    """One VR for a dictionary entry that allows several ("OB or OW", "US or SS"): OW where
    offered, which is how Implicit VR encodes such values (PS3.5 §A.1), else the first."""
    if " or " not in vr:
        return vr
    options = vr.split(" or ")
    return "OW" if "OW" in options else options[0]


def _is_empty_value(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return not any(value.values())
    return isinstance(value, str) and not value
