"""Small HTTP helpers for tests: build STOW bodies, read multipart responses."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

import requests

from tessera_gateway.mediatype import parse_content_type
from tessera_gateway.multipart import iter_parts


def multipart_body(
    parts: Iterable[bytes], *, part_type: str | None = "application/dicom"
) -> tuple[bytes, str]:
    """(body, Content-Type) of a ``multipart/related`` STOW request."""
    boundary = uuid.uuid4().hex
    chunks = []
    for data in parts:
        chunks.append(f"--{boundary}\r\n".encode())
        if part_type:
            chunks.append(f"Content-Type: {part_type}\r\n".encode())
        chunks.append(b"\r\n" + data + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return b"".join(chunks), content_type


def stow(root: str, parts: Iterable[bytes], study_uid: str | None = None) -> requests.Response:
    body, content_type = multipart_body(parts)
    url = f"{root}/studies" + (f"/{study_uid}" if study_uid else "")
    return requests.post(
        url,
        data=body,
        headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
        timeout=300,
    )


def retrieve_parts(url: str) -> list[tuple[dict[str, str], bytes]]:
    """GET a WADO-RS resource as stored (transfer-syntax=*) and split the multipart body."""
    response = requests.get(
        url,
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
        timeout=300,
    )
    response.raise_for_status()
    media = parse_content_type(response.headers["Content-Type"])
    return iter_parts(response.content, media.params["boundary"])


def sequence_items(body: dict[str, object], tag: str) -> list[dict[str, object]]:
    attr = body.get(tag)
    if not isinstance(attr, dict):
        return []
    values = attr.get("Value", [])
    return list(values) if isinstance(values, list) else []
