"""Helpers for the DICOM JSON Model (PS3.18 Annex F)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydicom import datadict

JsonDataset = dict[str, Any]


def tag_key(tag: int) -> str:
    """A tag as the JSON model spells it: eight upper-case hex digits (PS3.18 §F.2.1)."""
    return f"{tag:08X}"


def element(vr: str, *values: Any) -> dict[str, Any]:
    """One attribute object; no values gives an empty (zero-length) attribute (§F.2.2)."""
    if not values:
        return {"vr": vr}
    return {"vr": vr, "Value": list(values)}


def first_value(dataset: Mapping[str, Any], tag: int) -> Any:
    """The first value of ``tag`` in a JSON dataset, or None when absent or empty."""
    attr = dataset.get(tag_key(tag))
    if not attr:
        return None
    values = attr.get("Value")
    if not values:
        return None
    return values[0]


def person_name_text(value: Any) -> str | None:
    """The Alphabetic component group of a JSON PN value (§F.2.5), or None."""
    if isinstance(value, Mapping):
        alphabetic = value.get("Alphabetic")
        return str(alphabetic) if alphabetic is not None else None
    return None


def tags_for_keywords(*keywords: str) -> frozenset[int]:
    """The tags of DICOM keywords (PS3.6 data dictionary); a typo raises ValueError."""
    tags = set()
    for keyword in keywords:
        tag = datadict.tag_for_keyword(keyword)
        if tag is None:
            raise ValueError(f"unknown DICOM keyword {keyword!r}")
        tags.add(int(tag))
    return frozenset(tags)


def subset(dataset: Mapping[str, Any], tags: Iterable[int]) -> JsonDataset:
    """The attributes of ``dataset`` whose tags are in ``tags``, in tag order."""
    keys = sorted(tag_key(t) for t in tags)
    return {k: dataset[k] for k in keys if k in dataset}
