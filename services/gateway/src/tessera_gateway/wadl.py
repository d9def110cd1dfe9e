"""The Capabilities Description (PS3.18 Annex H): a WADL document, and its JSON equivalent.

Pure. ``description`` turns the resource table (``capabilities.RESOURCES``) into one tree that
mirrors WADL's elements (``application`` > ``resources`` > nested ``resource`` > ``method`` >
``request``/``response`` > ``param``/``representation``); ``to_wadl`` writes that tree as WADL
XML (https://www.w3.org/submission/wadl/, namespace ``http://wadl.dev.java.net/2009/02``) and
``to_json`` as JSON, with WADL's element and attribute names as keys, so both forms say the
same thing. As Annex H asks, the ``resources`` base is the service root and the tree holds the
Target Resource with all its methods and child resources; the Retrieve Capabilities
transaction itself is not listed ("WADL is not self-describing").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree

import orjson

from .capabilities import Method, Param, Resource, Support, dicomweb_resources

WADL_NAMESPACE = "http://wadl.dev.java.net/2009/02"
XSD_NAMESPACE = "http://www.w3.org/2001/XMLSchema"
_XSD_TYPES = {"integer": "xsd:int", "boolean": "xsd:boolean", "string": "xsd:string"}

Node = dict[str, Any]


@dataclass
class _Trie:
    methods: list[Method] = field(default_factory=list)
    params: list[Param] = field(default_factory=list)
    children: dict[str, _Trie] = field(default_factory=dict)


class UnknownResourceError(LookupError):
    """The Target Resource is not one the table describes."""


def _segments(path: str) -> list[str]:
    return [segment for segment in path.split("/") if segment]


def _build_trie(resources: tuple[Resource, ...]) -> _Trie:
    root = _Trie()
    for resource in resources:
        node = root
        for segment in _segments(resource.path):
            node = node.children.setdefault(segment, _Trie())
            if segment.startswith("{") and not node.params:
                name = segment[1:-1]
                node.params = [p for m in resource.methods for p in m.params if p.name == name][:1]
        node.methods.extend(resource.methods)
    return root


def _param(param: Param) -> Node:
    node: Node = {"name": param.name, "style": param.style}
    node["type"] = _XSD_TYPES.get(str(param.schema.get("type")), "xsd:string")
    if param.required:
        node["required"] = "true"
    if param.repeating:
        node["repeating"] = "true"
    node["doc"] = param.description
    if param.options:
        node["option"] = [{"value": value} for value in param.options]
    return node


def _method(method: Method) -> Node:
    doc = method.summary + f" ({method.see})"
    if method.support is Support.IN_PROGRESS:
        doc += " [in progress]"
    request: Node = {
        "param": [_param(p) for p in method.params if p.style != "template"],
        "representation": [{"mediaType": media} for media, _ in method.request_media_types],
    }
    responses = [
        {
            "status": str(response.status),
            "doc": response.description,
            "representation": [{"mediaType": media} for media in response.media_types],
        }
        for response in method.responses
    ]
    return {
        "name": method.name,
        "id": method.id,
        "doc": doc,
        "request": request,
        "response": responses,
    }


def _resource(path: str, trie: _Trie) -> Node:
    """A WADL ``resource``; chains of method-less single children collapse into one path."""
    params = list(trie.params)
    while not trie.methods and len(trie.children) == 1:
        segment, trie = next(iter(trie.children.items()))
        path = f"{path}/{segment}" if path else segment
        params.extend(trie.params)
    return {
        "path": path,
        "param": [_param(p) for p in params],
        "method": [_method(m) for m in trie.methods],
        "resource": [_resource(segment, child) for segment, child in trie.children.items()],
    }


def description(base_url: str, target: str = "/") -> Node:
    """The Capabilities Description of ``target`` (a resource template below the base path,
    ``/`` for the whole service) as a WADL-shaped tree. ``UnknownResourceError`` if the table
    has no such resource."""
    trie = _build_trie(dicomweb_resources())
    segments = _segments(target)
    node = trie
    params: list[Param] = []
    for segment in segments:
        if segment not in node.children:
            raise UnknownResourceError(target)
        node = node.children[segment]
        params.extend(node.params)
    if segments:
        resource = _resource("/".join(segments), _Trie(node.methods, params, node.children))
        resources = [resource]
    else:
        resources = [_resource(segment, child) for segment, child in node.children.items()]
    return {
        "application": {
            "resources": {"base": base_url.rstrip("/") + "/", "resource": resources},
        }
    }


def to_json(tree: Node) -> bytes:
    return orjson.dumps(tree)


def to_wadl(tree: Node) -> bytes:
    """The tree as a WADL document: list values become repeated child elements, string values
    attributes, and ``doc`` a ``doc`` element."""
    ElementTree.register_namespace("", WADL_NAMESPACE)
    application = ElementTree.Element(
        f"{{{WADL_NAMESPACE}}}application", {"xmlns:xsd": XSD_NAMESPACE}
    )
    _fill(application, tree["application"])
    document: bytes = ElementTree.tostring(application, encoding="utf-8", xml_declaration=True)
    return document


def _fill(element: ElementTree.Element, node: Node) -> None:
    for key, value in node.items():
        if key == "doc":
            ElementTree.SubElement(element, f"{{{WADL_NAMESPACE}}}doc").text = value
        elif isinstance(value, str):
            element.set(key, value)
        elif isinstance(value, dict):
            _fill(ElementTree.SubElement(element, f"{{{WADL_NAMESPACE}}}{key}"), value)
        else:
            for item in value:
                _fill(ElementTree.SubElement(element, f"{{{WADL_NAMESPACE}}}{key}"), item)
