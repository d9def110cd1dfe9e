"""Media types as frozen values (RFC 9110 §8.3.1, RFC 2045 §5.1).

``Content-Type`` of a STOW-RS request and every item of an ``Accept`` header are parsed here,
once, into a ``MediaType``. DICOM puts meaning in the parameters (``type``, ``boundary``,
``transfer-syntax``; PS3.18 §8.7.3), so they are kept, with their names lower-cased and their
values exactly as sent (a ``boundary`` is case-sensitive).

Grammar accepted::

    media-type = type "/" subtype *( OWS ";" OWS [ parameter ] )
    parameter  = token OWS "=" OWS ( quoted-string / value )

Two leniencies, because real DICOMweb clients need them: whitespace is allowed around ``=``,
and an unquoted value may hold any character except whitespace, ``;`` and ``"`` (clients send
``type=application/dicom`` and ``boundary=----=_Part_1`` without quotes).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

_TCHARS = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"  # RFC 9110 §5.6.2 token
_TOKEN_RE = re.compile(_TCHARS)
_ESSENCE_RE = re.compile(rf"[ \t]*({_TCHARS})/({_TCHARS})[ \t]*")
_SEPARATOR_RE = re.compile(r"[ \t]*;[ \t]*")
_NAME_RE = re.compile(rf"({_TCHARS})[ \t]*=[ \t]*")
_QUOTED_RE = re.compile(r'"((?:[^"\\]|\\.)*)"[ \t]*')
_UNQUOTED_RE = re.compile(r'([^\s;"]+)[ \t]*')
_QUOTED_PAIR_RE = re.compile(r"\\(.)")


class MediaTypeError(ValueError):
    """Raised when a header value is not a media type."""


@dataclass(frozen=True)
class MediaType:
    """One media type or media range: ``type/subtype`` plus its parameters.

    ``type`` and ``subtype`` and parameter names are lower case (RFC 9110 §8.3.1: they are
    case-insensitive); parameter values are kept as sent.
    """

    type: str
    subtype: str
    params: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    @property
    def essence(self) -> str:
        """``type/subtype`` without parameters (the WHATWG MIME Sniffing term)."""
        return f"{self.type}/{self.subtype}"

    def __str__(self) -> str:
        """Serialise back to a header value, quoting values that are not tokens."""
        parts = [self.essence]
        for name, value in self.params.items():
            if _TOKEN_RE.fullmatch(value) is None:
                escaped = value.replace("\\", "\\\\").replace('"', '\\"')
                value = f'"{escaped}"'
            parts.append(f"{name}={value}")
        return "; ".join(parts)


def parse_content_type(header: str) -> MediaType:
    """Parse a ``Content-Type`` value; wildcards (``*/*``) are not a content type."""
    media_type = _parse(header)
    if "*" in (media_type.type, media_type.subtype):
        raise MediaTypeError(f"invalid media type {_shown(header)}: wildcard in a content type")
    return media_type


def parse_media_range(text: str) -> MediaType:
    """Parse one ``Accept`` media range: ``*/*``, ``type/*`` or ``type/subtype`` (RFC 9110 §12.5.1).

    A ``q`` parameter, if any, stays in ``params``; the caller separates the weight.
    """
    media_type = _parse(text)
    if media_type.type == "*" and media_type.subtype != "*":
        raise MediaTypeError(f"invalid media range {_shown(text)}: '*/subtype' is not allowed")
    return media_type


def _parse(text: str) -> MediaType:
    match = _ESSENCE_RE.match(text)
    if match is None:
        raise MediaTypeError(f"invalid media type {_shown(text)}: expected 'type/subtype'")
    type_, subtype = match.group(1).lower(), match.group(2).lower()
    params: dict[str, str] = {}
    pos = match.end()
    while pos < len(text):
        separator = _SEPARATOR_RE.match(text, pos)
        if separator is None:
            raise MediaTypeError(
                f"invalid media type {_shown(text)}: expected ';' at character {pos}"
            )
        pos = separator.end()
        if pos == len(text) or text[pos] == ";":
            continue  # empty parameter, allowed by RFC 9110 §5.6.6
        name_match = _NAME_RE.match(text, pos)
        if name_match is None:
            raise MediaTypeError(
                f"invalid media type {_shown(text)}: expected 'name=value' at character {pos}"
            )
        name = name_match.group(1).lower()
        pos = name_match.end()
        if text.startswith('"', pos):
            value_match = _QUOTED_RE.match(text, pos)
            if value_match is None:
                raise MediaTypeError(
                    f"invalid media type {_shown(text)}: unterminated quoted value for {name!r}"
                )
            value = _QUOTED_PAIR_RE.sub(r"\1", value_match.group(1))
        else:
            value_match = _UNQUOTED_RE.match(text, pos)
            if value_match is None:
                raise MediaTypeError(
                    f"invalid media type {_shown(text)}: parameter {name!r} has no value"
                )
            value = value_match.group(1)
        if name in params:
            raise MediaTypeError(f"invalid media type {_shown(text)}: parameter {name!r} repeated")
        params[name] = value
        pos = value_match.end()
    return MediaType(type_, subtype, params)


def _shown(text: str) -> str:
    return repr(text if len(text) <= 200 else text[:200] + "…")
