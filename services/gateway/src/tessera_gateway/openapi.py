"""The OpenAPI 3.1 document of the whole HTTP API, built from ``capabilities.RESOURCES``.

Pure. Each table method becomes an operation (``operationId`` = the PS3.18 transaction name);
path variables, query parameters and headers become parameters with JSON Schemas (UIDs:
``^[0-9]+(\\.[0-9]+)*$``, at most 64 characters, PS3.5 §9.1); responses list their media
types, JSON bodies have schemas (the DICOM JSON Model, PS3.18 Annex F, and the error body of
``errors.py``). Security follows ``access.required_access``: the scope a route needs is the
role list of its requirement, public routes have none. ``x-tessera-support`` marks rows still
being built and ``x-tessera-fuzz: false`` the operations the schemathesis run leaves out
(multipart request bodies it cannot make).

``routed`` filters the table to what the running gateway actually routes, so the served
document never promises a resource that answers 404.
"""

from __future__ import annotations

from collections.abc import Callable

from .access import required_access
from .capabilities import (
    ERROR_TYPE,
    JsonSchema,
    Method,
    Param,
    Resource,
    Response,
    Support,
    operations,
)

_IGNORED_HEADERS = frozenset({"accept", "content-type", "authorization"})
"""OpenAPI 3.1 §4.8.12.1: parameters with these header names SHALL be ignored."""

ERROR_SCHEMA: JsonSchema = {
    "type": "object",
    "description": "Tessera's error body (tessera_gateway.errors, tessera_gateway.auth)",
    "required": ["error", "title", "reason"],
    "properties": {
        "error": {"type": "string", "description": "Stable code, e.g. invalid-uid"},
        "title": {"type": "string"},
        "reason": {"type": "string", "description": "What went wrong, for a human"},
        "see": {"type": "string", "description": "Citation, e.g. PS3.18 §8.2"},
    },
}
_ATTRIBUTE: JsonSchema = {
    "type": "object",
    "required": ["vr"],
    "properties": {
        "vr": {"type": "string", "pattern": "^[A-Z]{2}$"},
        "Value": {"type": "array"},
        "BulkDataURI": {"type": "string"},
        "InlineBinary": {"type": "string"},
    },
}
SCHEMAS: dict[str, JsonSchema] = {
    "Error": ERROR_SCHEMA,
    "DicomJsonDataset": {
        "type": "object",
        "description": "DICOM JSON Model, PS3.18 Annex F: tags as 8 upper-case hex digits",
        "propertyNames": {"pattern": "^[0-9A-F]{8}$"},
        "additionalProperties": {"$ref": "#/components/schemas/DicomJsonAttribute"},
    },
    "DicomJsonAttribute": _ATTRIBUTE,
    "DicomJsonArray": {"type": "array", "items": {"$ref": "#/components/schemas/DicomJsonDataset"}},
    "Capabilities": {
        "type": "object",
        "description": "PS3.18 Annex H Capabilities Description, WADL elements as JSON",
        "required": ["application"],
    },
    "ChangeFeed": {"type": "array", "items": {"$ref": "#/components/schemas/ChangeFeedEntry"}},
    "ChangeFeedEntry": {"type": "object", "description": "docs/EVENTS.md"},
    "Health": {"type": "object", "required": ["status"]},
    "Readiness": {
        "type": "object",
        "required": ["status", "checks"],
        "properties": {"status": {"type": "string"}, "checks": {"type": "object"}},
    },
}
SECURITY_SCHEMES: dict[str, JsonSchema] = {
    "bearerJWT": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "OIDC access token; scopes read, write, delete, admin (docs/SECURITY.md)",
    },
    "apiKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "Tessera API key (tessera apikeys create), sent as a bearer token",
    },
}
_COMMON_ERRORS = {
    "503": "Draining for shutdown, or a service is unavailable (Retry-After)",
    "504": "A service did not answer in time",
}
_AUTH_ERRORS = {
    "401": "No or invalid credential (RFC 6750 §3.1; WWW-Authenticate)",
    "403": "The credential lacks the scope (RFC 6750 §3.1)",
}

RouteFilter = Callable[[str, str], bool]
"""(method, full path template) -> whether the gateway routes it."""


def _schema(param: Param) -> JsonSchema:
    schema = dict(param.schema)
    if param.options and schema.get("type") == "string" and "pattern" not in schema:
        schema["enum"] = list(param.options)
    return schema


def _parameter(param: Param) -> JsonSchema | None:
    if param.style == "header" and param.name.lower() in _IGNORED_HEADERS:
        return None
    location = {"query": "query", "header": "header", "template": "path"}[param.style]
    node: JsonSchema = {
        "name": param.name,
        "in": location,
        "description": param.description,
        "required": param.required or location == "path",
        "schema": _schema(param),
    }
    if param.schema.get("type") in ("array", "object"):
        node.update(style="form", explode=True)
    if param.example is not None:
        node["example"] = param.example
    return node


def _content(response: Response) -> JsonSchema:
    content: JsonSchema = {}
    for media in response.media_types:
        entry: JsonSchema = {}
        if response.schema is not None and (media.endswith("json") or media == ERROR_TYPE):
            entry["schema"] = {"$ref": f"#/components/schemas/{response.schema}"}
        content[media] = entry
    return content


def _error_response(description: str) -> JsonSchema:
    return {
        "description": description,
        "content": {ERROR_TYPE: {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _operation(method: Method, full_path: str, base: str) -> JsonSchema:
    parameters = [p for p in map(_parameter, method.params) if p is not None]
    responses: JsonSchema = {}
    for response in method.responses:
        entry: JsonSchema = {"description": response.description}
        if response.media_types:
            entry["content"] = _content(response)
        responses[str(response.status)] = entry
    access = required_access(method.name, full_path, base_path=base)
    security: list[JsonSchema] = []
    if not access.public:
        roles = [access.scope.value] if access.scope is not None else []
        security = [{"bearerJWT": roles}, {"apiKey": roles}]
        for status, text in _AUTH_ERRORS.items():
            responses.setdefault(status, _error_response(text))
    if method.dicomweb:
        for status, text in _COMMON_ERRORS.items():
            responses.setdefault(status, _error_response(text))
    operation: JsonSchema = {
        "operationId": method.id,
        "summary": method.summary,
        "description": f"See {method.see}.",
        "tags": [method.tag],
        "parameters": parameters,
        "responses": dict(sorted(responses.items())),
        "security": security,
    }
    if method.request_media_types:
        operation["requestBody"] = {
            "required": True,
            "content": {
                media: {"x-tessera-support": support.value}
                for media, support in method.request_media_types
            },
        }
    if method.support is not Support.SUPPORTED:
        operation["x-tessera-support"] = method.support.value
    if not method.fuzz:
        operation["x-tessera-fuzz"] = False
    return operation


def build_openapi(
    base: str, *, routed: RouteFilter | None = None, server_url: str | None = None
) -> JsonSchema:
    """The OpenAPI document for the gateway mounted at ``base`` (e.g. ``/dicom-web``).

    With ``routed``, only the operations it accepts are included (the served document);
    without, every row of the table (for tests and offline use).
    """
    base = base.rstrip("/")
    paths: dict[str, JsonSchema] = {}
    for resource, method in operations():
        full_path = resource.full_path(base)
        if routed is not None and not routed(method.name, full_path):
            continue
        operation = _operation(method, full_path, base)
        paths.setdefault(_openapi_path(resource, base), {})[method.name.lower()] = operation
    document: JsonSchema = {
        "openapi": "3.1.0",
        "info": {
            "title": "Tessera",
            "version": "1",
            "description": "DICOMweb archive (DICOM PS3.18): STOW-RS, QIDO-RS, WADO-RS, "
            "WADO-URI, rendered resources, and the service endpoints. docs/CONFORMANCE.md "
            "lists what is supported.",
        },
        "paths": paths,
        "components": {"schemas": SCHEMAS, "securitySchemes": SECURITY_SCHEMES},
        "tags": [{"name": name} for name in ("DICOMweb", "Capabilities", "Change feed", "Service")],
    }
    if server_url is not None:
        document["servers"] = [{"url": server_url}]
    return document


def _openapi_path(resource: Resource, base: str) -> str:
    return resource.full_path(base) or "/"


def fuzzable_operation_ids(document: JsonSchema) -> list[str]:
    """The operations a schemathesis run covers: every one not marked ``x-tessera-fuzz``."""
    return [
        operation["operationId"]
        for item in document["paths"].values()
        for operation in item.values()
        if operation.get("x-tessera-fuzz", True)
    ]
