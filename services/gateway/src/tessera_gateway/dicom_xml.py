"""The DICOM JSON Model written as the Native DICOM Model XML (PS3.19 Annex A.1).

Pure and shared by every transaction that answers ``application/dicom+xml`` (QIDO-RS search
results, and WADO-RS metadata / STOW-RS responses when they offer XML). The input is a dataset
in the JSON Model (PS3.18 Annex F), which carries everything the XML needs: ``vr``,
``Value`` (strings, numbers, person-name objects, sequence items), ``InlineBinary`` and
``BulkDataURI``.

Element text and attribute values are escaped, and characters XML 1.0 cannot carry at all
(most C0 controls, lone surrogates, U+FFFE/U+FFFF) are replaced with U+FFFD, so the output is
always well-formed. ``xml:space="preserve"`` keeps the values' spaces significant.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from pydicom import datadict

NAMESPACE = "http://dicom.nema.org/PS3.19/models/NativeDICOM"
DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'

#: Person name components in PS3.5 §6.2.1.1 order, as PS3.19 names the XML elements.
PERSON_NAME_COMPONENTS = ("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix")
PERSON_NAME_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")

_TAG = re.compile(r"[0-9A-Fa-f]{8}")
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})
_ATTRIBUTE_ESCAPES = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\t": "&#9;", "\n": "&#10;",
     "\r": "&#13;"}
)  # fmt: skip


def escape_text(text: str) -> str:
    """``text`` as XML character data: markup escaped, unrepresentable characters replaced."""
    return _NOT_XML.sub("\ufffd", text).translate(_TEXT_ESCAPES)


def escape_attribute(text: str) -> str:
    """``text`` as a double-quoted XML attribute value (whitespace kept as references, since
    attribute-value normalization would otherwise turn it into spaces)."""
    return _NOT_XML.sub("\ufffd", text).translate(_ATTRIBUTE_ESCAPES)


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _private_creator(dataset: Mapping[str, Any], tag: int) -> str | None:
    """The Private Creator of a private data element (PS3.5 §7.8.1): the value of
    (gggg,00xx) for element (gggg,xxyy)."""
    group, element = tag >> 16, tag & 0xFFFF
    if group % 2 == 0 or element < 0x1000:
        return None
    creator = dataset.get(f"{group:04X}{element >> 8:04X}")
    values = creator.get("Value") if isinstance(creator, Mapping) else None
    if values and isinstance(values[0], str):
        return values[0].strip(" ")
    return None


def _person_name(value: Any, number: int) -> Iterator[str]:
    yield f'<PersonName number="{number}">'
    if isinstance(value, str):
        value = {"Alphabetic": value}
    if isinstance(value, Mapping):
        for group in PERSON_NAME_GROUPS:
            text = value.get(group)
            if not isinstance(text, str) or not text:
                continue
            yield f"<{group}>"
            for name, component in zip(PERSON_NAME_COMPONENTS, text.split("^"), strict=False):
                if component:
                    yield f"<{name}>{escape_text(component)}</{name}>"
            yield f"</{group}>"
    yield "</PersonName>"


def _attribute(dataset: Mapping[str, Any], key: str, attr: Mapping[str, Any]) -> Iterator[str]:
    tag = int(key, 16)
    vr = str(attr.get("vr", "UN"))
    head = f'<DicomAttribute tag="{key.upper()}" vr="{escape_attribute(vr)}"'
    keyword = datadict.keyword_for_tag(tag) if (tag >> 16) % 2 == 0 else ""
    if keyword:
        head += f' keyword="{keyword}"'
    creator = _private_creator(dataset, tag)
    if creator is not None:
        head += f' privateCreator="{escape_attribute(creator)}"'
    yield head + ">"
    if "BulkDataURI" in attr:
        yield f'<BulkData uri="{escape_attribute(str(attr["BulkDataURI"]))}"/>'
    elif "InlineBinary" in attr:
        yield f"<InlineBinary>{escape_text(str(attr['InlineBinary']))}</InlineBinary>"
    else:
        for number, value in enumerate(attr.get("Value") or [], start=1):
            if vr == "SQ":
                yield f'<Item number="{number}">'
                if isinstance(value, Mapping):
                    yield from _dataset(value)
                yield "</Item>"
            elif vr == "PN":
                yield from _person_name(value, number)
            elif value is None:
                yield f'<Value number="{number}"/>'
            else:
                yield f'<Value number="{number}">{escape_text(_value_text(value))}</Value>'
    yield "</DicomAttribute>"


def _dataset(dataset: Mapping[str, Any]) -> Iterator[str]:
    for key in sorted(dataset):
        attr = dataset[key]
        if _TAG.fullmatch(key) and isinstance(attr, Mapping):
            yield from _attribute(dataset, key, attr)


def to_xml(dataset: Mapping[str, Any]) -> bytes:
    """One dataset as a Native DICOM Model document (UTF-8, with the XML declaration)."""
    body = "".join(_dataset(dataset))
    return (
        f'{DECLARATION}<NativeDicomModel xmlns="{NAMESPACE}" xml:space="preserve">'
        f"{body}</NativeDicomModel>\n"
    ).encode()
