"""Where a bulk data element's value lies in a stored PS3.10 file (for BulkDataURIs).

A BulkDataURI names an attribute by its tag path (``tessera_store.metadata``): the tag, after
``sequence tag/item index/`` for each enclosing sequence, e.g. ``00540016/0/00181072``. The
value is found by parsing the header with pydicom over a ranged reader, large values left
unread (``defer_size``), so only element headers are fetched; the value's offset is where
pydicom found it, its length the 32-bit length that precedes it (PS3.5 §7.1.2: OB, OD, OF, OL,
OV, OW and UN carry a 32-bit length in either VR encoding). Little endian files only: the
gateway asks the codec for an Explicit VR Little Endian copy of Deflated and Big Endian ones.

Pure and synchronous (run it in a thread).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import IO, BinaryIO, cast

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

_TAG_PATH = re.compile(r"[0-9A-Fa-f]{8}(/[0-9]{1,6}/[0-9A-Fa-f]{8}){0,16}")
_UNDEFINED = 0xFFFFFFFF
_DEFER = 256
PIXEL_DATA_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})


class TagPathError(ValueError):
    """Not a tag path."""


class ElementNotFoundError(LookupError):
    """No such element, or it has no value that can be served as bytes."""


@dataclass(frozen=True, slots=True)
class TagPath:
    """``sequences`` is ((sequence tag, item index), …) leading to ``tag``."""

    sequences: tuple[tuple[int, int], ...]
    tag: int

    @property
    def top_level_pixel_data(self) -> bool:
        return not self.sequences and self.tag in PIXEL_DATA_TAGS

    def __str__(self) -> str:
        parts = [f"{tag:08X}/{item}" for tag, item in self.sequences]
        return "/".join([*parts, f"{self.tag:08X}"])


def parse_tag_path(text: str) -> TagPath:
    if not _TAG_PATH.fullmatch(text):
        raise TagPathError(
            f"invalid bulk data path {text[:80]!r}: expected a tag of 8 hex digits, preceded by "
            "'sequence tag/item index/' for each enclosing sequence"
        )
    pieces = text.split("/")
    sequences = tuple(
        (int(pieces[i], 16), int(pieces[i + 1])) for i in range(0, len(pieces) - 1, 2)
    )
    return TagPath(sequences, int(pieces[-1], 16))


@dataclass(frozen=True, slots=True)
class ElementRange:
    offset: int
    length: int
    vr: str
    #: (0042,0012) MIME Type of Encapsulated Document, when the element is (0042,0011).
    media_type: str | None = None


def locate_element(fp: IO[bytes], path: TagPath) -> ElementRange:
    """The byte range of the value at ``path`` in the PS3.10 file ``fp``."""
    try:
        ds = dcmread(cast(BinaryIO, fp), defer_size=_DEFER, stop_before_pixels=True)
    except Exception as exc:
        raise ElementNotFoundError("the stored object could not be parsed") from exc
    dataset: Dataset = ds
    bases: list[int] = []
    for tag, item in path.sequences:
        try:
            sequence = dataset[tag]
            bases.append(sequence.file_tell or 0)
            dataset = sequence.value[item]
        except (KeyError, IndexError, TypeError) as exc:
            raise ElementNotFoundError(f"no item {item} in sequence ({tag:08X})") from exc
        if not isinstance(dataset, Dataset):
            raise ElementNotFoundError(f"({tag:08X}) is not a sequence")
    if path.tag not in dataset:
        raise ElementNotFoundError(f"no element ({path.tag:08X})")
    element = dataset.get_item(path.tag)
    offset = element.value_tell if isinstance(element, RawDataElement) else element.file_tell
    vr = str(element.VR) if element.VR else "UN"
    if offset is None or vr == "SQ":
        raise ElementNotFoundError(f"({path.tag:08X}) has no value to serve as bulk data")
    offset, length = _find_value(fp, path.tag, offset, bases)
    if length == _UNDEFINED:
        raise ElementNotFoundError(f"({path.tag:08X}) has an undefined length")
    media_type = None
    if path.tag == 0x00420011 and not path.sequences:
        mime = ds.get("MIMETypeOfEncapsulatedDocument")
        media_type = str(mime).strip() if mime else None
    return ElementRange(offset, length, vr, media_type)


def _find_value(fp: IO[bytes], tag: int, offset: int, bases: list[int]) -> tuple[int, int]:
    """The absolute offset and the length of a value pydicom found at ``offset``.

    pydicom counts positions inside a sequence of defined length from the start of that
    sequence's value, so the offset may be relative to any enclosing sequences (whose value
    offsets are ``bases``). Each candidate is checked against the element header that must
    precede it: the tag, 12 bytes before the value (explicit VR, 32-bit length) or 8 (implicit
    VR), and the length in the 4 bytes before the value.
    """
    expected = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    candidates = {offset}
    for base in bases[-8:]:
        candidates |= {c + base for c in candidates}
    for candidate in sorted(candidates):
        if candidate < 8:
            continue
        fp.seek(candidate - 12 if candidate >= 12 else candidate - 8)
        header = fp.read(12 if candidate >= 12 else 8)
        if header[:4] == expected or header[-8:-4] == expected:
            (length,) = struct.unpack("<L", header[-4:])
            return candidate, length
    raise ElementNotFoundError(f"the value of ({tag:08X}) could not be located")
