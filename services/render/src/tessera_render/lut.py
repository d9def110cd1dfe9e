"""Lookup tables as the standard encodes them: LUT Descriptor + LUT Data (PS3.3 §C.11.1.1.1,
§C.11.2.1.1). Used by the Modality LUT Sequence and the VOI LUT Sequence."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset


@dataclass(frozen=True, slots=True)
class LookupTable:
    """``first``: the first input value mapped; ``data``: the output per input value;
    ``bits``: bits per entry as the descriptor states them."""

    first: int
    data: np.ndarray
    bits: int

    @property
    def largest_output(self) -> int:
        """Some writers declare 16 bits and store 12-bit entries; the larger of the stated
        range and the data itself scales the output."""
        return max((1 << self.bits) - 1, int(self.data.max(initial=0)))

    def apply(self, values: np.ndarray) -> np.ndarray:
        """Inputs below ``first`` take the first entry, inputs past the end the last entry
        (PS3.3 §C.11.1.1.1)."""
        index = np.clip(np.rint(values).astype(np.int64) - self.first, 0, len(self.data) - 1)
        return np.asarray(self.data[index])


def lookup_table(item: Dataset, little_endian: bool = True) -> LookupTable | None:
    """The LUT of one Modality/VOI LUT Sequence item, or None when it is unusable."""
    descriptor = item.get("LUTDescriptor")
    raw = item.get("LUTData")
    if descriptor is None or raw is None or len(descriptor) != 3:
        return None
    entries, first, bits = (int(v) for v in descriptor)
    entries = entries or 65536  # 0 means 2^16 entries (PS3.3 §C.11.1.1.1)
    data = lut_values(raw, bits, entries, little_endian)
    if data.size == 0:
        return None
    return LookupTable(first=first, data=data[:entries].astype(np.float64), bits=bits)


def lut_values(raw: Any, bits: int, entries: int, little_endian: bool = True) -> np.ndarray:
    """LUT Data as integers: a list/int when pydicom decoded it (VR US), bytes when OW.
    Entries of 8 bits are stored one per 16-bit word, except by writers that pack them two
    to a word; the data's length tells which."""
    if isinstance(raw, bytes | bytearray):
        if bits <= 8 and len(raw) == entries:
            return np.frombuffer(raw, dtype=np.uint8).astype(np.int64)
        dtype = np.dtype("<u2" if little_endian else ">u2")
        return np.frombuffer(bytes(raw[: len(raw) // 2 * 2]), dtype=dtype).astype(np.int64)
    if isinstance(raw, int):
        return np.array([raw], dtype=np.int64)
    return np.asarray(list(raw), dtype=np.int64)


def is_little_endian(header: Dataset) -> bool:
    """How the header's OW values are stored: as the file was (pydicom keeps OW bytes)."""
    encoding = getattr(header, "original_encoding", None)
    if encoding and encoding[1] is not None:
        return bool(encoding[1])
    return True
