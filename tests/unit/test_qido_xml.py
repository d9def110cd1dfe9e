"""PS3.19 Native DICOM Model XML from DICOM JSON, and QIDO-RS representation negotiation."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest

from tessera_common.errors import TesseraError
from tessera_gateway.dicom_xml import NAMESPACE, escape_attribute, escape_text, to_xml
from tessera_gateway.qido import representation

NS = {"d": NAMESPACE}


def parsed(dataset: dict[str, Any]) -> ET.Element:
    document = to_xml(dataset)
    assert document.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    return ET.fromstring(document)


XML_CASES: list[tuple[str, dict[str, Any], str, list[tuple[str, str]]]] = [
    (
        "string values, numbered, with keyword",
        {"00080061": {"vr": "CS", "Value": ["CT", "MR"]}},
        "d:DicomAttribute[@tag='00080061'][@vr='CS'][@keyword='ModalitiesInStudy']/d:Value",
        [("1", "CT"), ("2", "MR")],
    ),
    (
        "markup is escaped",
        {"00081030": {"vr": "LO", "Value": ['<b>&"x"</b>']}},
        "d:DicomAttribute/d:Value",
        [("1", '<b>&"x"</b>')],
    ),
    (
        "numbers",
        {"00280030": {"vr": "DS", "Value": [0.5, 2]}, "00280010": {"vr": "US", "Value": [512]}},
        "d:DicomAttribute[@tag='00280030']/d:Value",
        [("1", "0.5"), ("2", "2")],
    ),
    (
        "characters XML cannot carry are replaced",
        {"00081030": {"vr": "LO", "Value": ["a\x00b\x1bc\ufffed"]}},
        "d:DicomAttribute/d:Value",
        [("1", "a\ufffdb\ufffdc\ufffdd")],
    ),
    (
        "non-ASCII text",
        {"00081030": {"vr": "LO", "Value": ["Übersicht — 山田"]}},
        "d:DicomAttribute/d:Value",
        [("1", "Übersicht — 山田")],
    ),
    (
        "empty value among several",
        {"00280030": {"vr": "DS", "Value": [None, 1.5]}},
        "d:DicomAttribute/d:Value",
        [("1", ""), ("2", "1.5")],
    ),
]


@pytest.mark.parametrize(
    ("dataset", "path", "values"),
    [pytest.param(d, p, v, id=name) for name, d, p, v in XML_CASES],
)
def test_values(dataset: dict[str, Any], path: str, values: list[tuple[str, str]]) -> None:
    root = parsed(dataset)
    assert root.tag == f"{{{NAMESPACE}}}NativeDicomModel"
    found = root.findall(path, NS)
    assert [(e.get("number"), e.text or "") for e in found] == values


def test_person_name_components_and_groups() -> None:
    root = parsed(
        {
            "00100010": {
                "vr": "PN",
                "Value": [{"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎"}],
            }
        }
    )
    name = root.find("d:DicomAttribute/d:PersonName[@number='1']", NS)
    assert name is not None
    assert name.findtext("d:Alphabetic/d:FamilyName", namespaces=NS) == "Yamada"
    assert name.findtext("d:Alphabetic/d:GivenName", namespaces=NS) == "Tarou"
    assert name.findtext("d:Ideographic/d:FamilyName", namespaces=NS) == "山田"
    assert name.find("d:Phonetic", NS) is None
    full = parsed({"00100010": {"vr": "PN", "Value": [{"Alphabetic": "A^B^C^Dr^Jr"}]}})
    components = full.findall("d:DicomAttribute/d:PersonName/d:Alphabetic/*", NS)
    assert [c.tag.split("}")[1] for c in components] == [
        "FamilyName",
        "GivenName",
        "MiddleName",
        "NamePrefix",
        "NameSuffix",
    ]


def test_sequences_binary_bulk_and_private() -> None:
    root = parsed(
        {
            "00400275": {
                "vr": "SQ",
                "Value": [{"00400009": {"vr": "SH", "Value": ["S1"]}}, {}],
            },
            "00091010": {"vr": "OB", "InlineBinary": "AAEC"},
            "00090010": {"vr": "LO", "Value": ["ACME & Co"]},
            "7FE00010": {"vr": "OW", "BulkDataURI": "http://x/a?b=1&c=2"},
            "not-a-tag": {"vr": "LO", "Value": ["ignored"]},
        }
    )
    items = root.findall("d:DicomAttribute[@tag='00400275']/d:Item", NS)
    assert [i.get("number") for i in items] == ["1", "2"]
    assert items[0].findtext("d:DicomAttribute/d:Value", namespaces=NS) == "S1"
    private = root.find("d:DicomAttribute[@tag='00091010']", NS)
    assert private is not None
    assert private.get("privateCreator") == "ACME & Co"
    assert private.get("keyword") is None
    assert private.findtext("d:InlineBinary", namespaces=NS) == "AAEC"
    bulk = root.find("d:DicomAttribute[@tag='7FE00010']/d:BulkData", NS)
    assert bulk is not None and bulk.get("uri") == "http://x/a?b=1&c=2"
    assert len(root) == 4


@pytest.mark.parametrize(
    ("text", "as_text", "as_attribute"),
    [
        ("a<b>&c", "a&lt;b&gt;&amp;c", "a&lt;b&gt;&amp;c"),
        ('"q"', '"q"', "&quot;q&quot;"),
        ("tab\tnl\n", "tab\tnl\n", "tab&#9;nl&#10;"),
        ("\x07", "\ufffd", "\ufffd"),
    ],
)
def test_escaping(text: str, as_text: str, as_attribute: str) -> None:
    assert escape_text(text) == as_text
    assert escape_attribute(text) == as_attribute


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        (None, "json"),
        ("*/*", "json"),
        ("application/dicom+json", "json"),
        ("application/json", "json"),
        ('multipart/related; type="application/dicom+xml"', "xml"),
        ("multipart/related; type=application/dicom+xml", "xml"),
        ("multipart/related", "xml"),
        ("application/dicom+xml", "xml"),
        ('multipart/related; type="application/dicom+xml", application/dicom+json;q=0.5', "xml"),
        ('application/dicom+json, multipart/related; type="application/dicom+xml"', "json"),
        ('multipart/related; type="application/dicom+xml";q=0.2, */*;q=0.1', "xml"),
    ],
)
def test_representation(accept: str | None, chosen: str) -> None:
    assert representation(accept) == chosen


@pytest.mark.parametrize(
    "accept",
    ["image/png", 'multipart/related; type="application/dicom"', "application/dicom+json;q=0"],
)
def test_representation_not_acceptable(accept: str) -> None:
    with pytest.raises(TesseraError) as caught:
        representation(accept)
    assert caught.value.http_status == 406
