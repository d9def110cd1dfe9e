"""The Native DICOM Model (PS3.19 Annex A.1) read into the DICOM JSON Model (PS3.18 Annex F).

STOW-RS metadata may arrive as XML (PS3.18 §10.5.1.2, ``application/dicom+xml``): one
``NativeDicomModel`` document per part. It is translated into the JSON Model so that a single
path (``assemble.py``) builds datasets from both.

The document is untrusted. It is parsed with defusedxml, which refuses a DOCTYPE, entity
declarations and external references outright: nothing is ever expanded, resolved or fetched.
"""

from __future__ import annotations

from typing import Any
from xml.etree.ElementTree import Element

from defusedxml import DefusedXmlException  # type: ignore[import-untyped]
from defusedxml.ElementTree import ParseError, fromstring  # type: ignore[import-untyped]

NAMESPACE = "http://dicom.nema.org/PS3.19/models/NativeDICOM"
PERSON_NAME_COMPONENTS = ("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix")
PERSON_NAME_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
_INTEGER_VRS = frozenset({"IS", "SL", "SS", "SV", "UL", "US", "UV"})
_DECIMAL_VRS = frozenset({"DS", "FL", "FD"})
_MAX_DEPTH = 32


class NotNativeDicomModelError(ValueError):
    """The XML is unsafe, malformed, or not a Native DICOM Model document."""


def _local(element: Element) -> str:
    """The element's name without its namespace (PS3.19 documents may or may not use one)."""
    tag = element.tag
    return tag.rsplit("}", 1)[1] if tag.startswith("{") else tag


def _number(vr: str, text: str) -> int | float | str:
    """A numeric value as a JSON number (PS3.18 §F.2.3); kept as text if it is not one, so
    that the dataset builder reports it."""
    try:
        if vr in _INTEGER_VRS:
            return int(text)
        value = float(text)
    except ValueError:
        return text
    return int(value) if vr == "IS" and value.is_integer() else value


def _person_name(element: Element) -> dict[str, str]:
    """``<PersonName>`` groups as the JSON Model's ``Alphabetic``/``Ideographic``/``Phonetic``
    strings of ``^``-separated components (PS3.5 §6.2.1)."""
    groups: dict[str, str] = {}
    for group in element:
        name = _local(group)
        if name not in PERSON_NAME_GROUPS:
            raise NotNativeDicomModelError(f"unexpected <{name}> in <PersonName>")
        components = {_local(c): (c.text or "") for c in group}
        unknown = set(components) - set(PERSON_NAME_COMPONENTS)
        if unknown:
            raise NotNativeDicomModelError(f"unexpected <{sorted(unknown)[0]}> in <{name}>")
        parts = [components.get(c, "") for c in PERSON_NAME_COMPONENTS]
        while parts and not parts[-1]:
            parts.pop()
        groups[name] = "^".join(parts)
    return groups


def _numbered(children: list[Element], kind: str, tag: str) -> list[Element]:
    """Children in the order of their ``number`` attribute (1..n, PS3.19 §A.1.5)."""
    try:
        keyed = sorted(children, key=lambda child: int(child.get("number", "0")))
    except ValueError:
        raise NotNativeDicomModelError(f"<{kind}> of {tag} has a non-numeric number") from None
    return keyed


def _attribute(element: Element, depth: int) -> tuple[str, dict[str, Any]]:
    tag = (element.get("tag") or "").upper()
    if len(tag) != 8 or any(c not in "0123456789ABCDEF" for c in tag):
        raise NotNativeDicomModelError(f"<DicomAttribute> has an invalid tag {tag[:16]!r}")
    vr = element.get("vr") or ""
    if len(vr) != 2 or not vr.isalpha() or not vr.isupper():
        raise NotNativeDicomModelError(f"attribute {tag} has an invalid vr")
    attribute: dict[str, Any] = {"vr": vr}
    children = list(element)
    kinds = {_local(child) for child in children}
    if len(kinds) > 1:
        raise NotNativeDicomModelError(f"attribute {tag} mixes {', '.join(sorted(kinds))}")
    kind = kinds.pop() if kinds else None
    if kind is None:
        return tag, attribute
    if kind == "BulkData":
        uri = children[0].get("uri") or children[0].get("uuid")
        if len(children) != 1 or not uri:
            raise NotNativeDicomModelError(f"attribute {tag}: <BulkData> needs one uri")
        attribute["BulkDataURI"] = uri
    elif kind == "InlineBinary":
        if len(children) != 1:
            raise NotNativeDicomModelError(f"attribute {tag}: more than one <InlineBinary>")
        attribute["InlineBinary"] = "".join((children[0].text or "").split())
    elif kind == "Item":
        if vr != "SQ":
            raise NotNativeDicomModelError(f"attribute {tag}: <Item> outside a sequence")
        items = _numbered(children, kind, tag)
        attribute["Value"] = [_dataset(item, depth + 1) for item in items]
    elif kind == "PersonName":
        attribute["Value"] = [_person_name(c) for c in _numbered(children, kind, tag)]
    elif kind == "Value":
        values = [c.text or "" for c in _numbered(children, kind, tag)]
        if vr in _INTEGER_VRS or vr in _DECIMAL_VRS:
            attribute["Value"] = [_number(vr, v.strip()) if v.strip() else None for v in values]
        else:
            attribute["Value"] = values
    else:
        raise NotNativeDicomModelError(f"attribute {tag}: unexpected <{kind}>")
    return tag, attribute


def _dataset(element: Element, depth: int) -> dict[str, Any]:
    if depth > _MAX_DEPTH:
        raise NotNativeDicomModelError(f"sequences nested deeper than {_MAX_DEPTH} levels")
    dataset: dict[str, Any] = {}
    for child in element:
        if _local(child) != "DicomAttribute":
            raise NotNativeDicomModelError(f"unexpected <{_local(child)}> in a dataset")
        tag, attribute = _attribute(child, depth)
        if tag in dataset:
            raise NotNativeDicomModelError(f"attribute {tag} appears twice")
        dataset[tag] = attribute
    return dataset


def xml_to_json(document: bytes) -> dict[str, Any]:
    """One ``NativeDicomModel`` document as a dataset in the DICOM JSON Model.

    Raises ``NotNativeDicomModelError`` for a DOCTYPE, entities or external references (never
    resolved), malformed XML, or a document that is not the Native DICOM Model.
    """
    try:
        root = fromstring(document, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise NotNativeDicomModelError(
            f"the XML declares a DTD, entities or external references ({type(exc).__name__}); "
            "they are refused, never resolved"
        ) from exc
    except (ParseError, ValueError) as exc:
        raise NotNativeDicomModelError(f"the XML is not well-formed: {exc}") from exc
    if _local(root) != "NativeDicomModel":
        raise NotNativeDicomModelError(
            f"the root element is <{_local(root)[:40]}>, not <NativeDicomModel> (PS3.19 §A.1)"
        )
    return _dataset(root, 0)
