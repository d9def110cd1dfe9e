"""PALETTE COLOR: stored indices → RGB through the Red/Green/Blue Palette Color Lookup
Tables (PS3.3 §C.7.6.3.1.5, §C.7.6.3.1.6), including Segmented Palette Color Lookup Table
Data (PS3.3 §C.7.9.2: discrete, linear and indirect segments)."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset

from .lut import is_little_endian, lut_values

CHANNELS = ("Red", "Green", "Blue")


class PaletteError(ValueError):
    """The palette attributes are missing or malformed."""


def palette_tables(header: Dataset) -> tuple[int, np.ndarray]:
    """(first mapped value, 8-bit table of shape entries x 3)."""
    little = is_little_endian(header)
    columns: list[np.ndarray] = []
    first = 0
    bits = 16
    for channel in CHANNELS:
        descriptor = header.get(f"{channel}PaletteColorLookupTableDescriptor")
        if descriptor is None or len(descriptor) != 3:
            raise PaletteError(f"the {channel} Palette Color Lookup Table Descriptor is missing")
        entries, first, bits = (int(v) for v in descriptor)
        entries = entries or 65536
        raw = header.get(f"{channel}PaletteColorLookupTableData")
        if raw is not None:
            data = lut_values(raw, bits, entries, little)[:entries]
        else:
            segmented = header.get(f"Segmented{channel}PaletteColorLookupTableData")
            if segmented is None:
                raise PaletteError(f"the {channel} Palette Color Lookup Table Data is missing")
            words = lut_values(segmented, 16, 0, little)
            data = expand_segments(words)[:entries]
        if data.size == 0:
            raise PaletteError(f"the {channel} Palette Color Lookup Table Data is empty")
        columns.append(data)
    length = max(len(c) for c in columns)
    padded = [np.pad(c, (0, length - len(c)), mode="edge") for c in columns]
    table = np.stack(padded, axis=1)
    largest = (1 << bits) - 1
    if bits == 16 and int(table.max()) <= 255:
        largest = 255  # 8-bit values declared as 16 bits: a common writer's mistake
    scaled = (table * 255 + largest // 2) // largest
    return first, np.clip(scaled, 0, 255).astype(np.uint8)


def palette_present(header: Dataset) -> str | None:
    """None if the three palettes are there (descriptor and data), else what is missing."""
    for channel in CHANNELS:
        if header.get(f"{channel}PaletteColorLookupTableDescriptor") is None:
            return f"the {channel} Palette Color Lookup Table Descriptor is missing"
        if (
            header.get(f"{channel}PaletteColorLookupTableData") is None
            and header.get(f"Segmented{channel}PaletteColorLookupTableData") is None
        ):
            return f"the {channel} Palette Color Lookup Table Data is missing"
    return None


def apply_palette(indices: np.ndarray, palette: tuple[int, np.ndarray]) -> np.ndarray:
    """RGB (rows x columns x 3, uint8) of a PALETTE COLOR frame through ``palette_tables``;
    indices outside the table take its first or last entry."""
    first, table = palette
    index = np.clip(indices.astype(np.int64) - first, 0, len(table) - 1)
    return table[index]


def expand_segments(words: np.ndarray) -> np.ndarray:
    """PS3.3 §C.7.9.2: opcode 0 discrete (n values), 1 linear (ramp of n values from the
    previous value to the next word), 2 indirect (copy n segments found at a byte offset)."""
    pieces: list[np.ndarray] = []
    _expand(np.asarray(words, dtype=np.int64), 0, None, pieces, depth=0)
    if not pieces:
        return np.zeros(0, dtype=np.int64)
    expanded: np.ndarray = np.rint(np.concatenate(pieces)).astype(np.int64)
    return expanded


def _expand(
    words: np.ndarray, start: int, count: int | None, pieces: list[np.ndarray], depth: int
) -> None:
    if depth > 4:
        raise PaletteError("the segmented palette's indirect segments nest too deeply")
    position, done = start, 0
    while position + 1 < len(words) and (count is None or done < count):
        opcode, length = int(words[position]), int(words[position + 1])
        position += 2
        if opcode == 0:
            pieces.append(words[position : position + length].astype(np.float64))
            position += length
        elif opcode == 1:
            if position >= len(words):
                break
            end = float(words[position])
            begin = float(pieces[-1][-1]) if pieces and len(pieces[-1]) else end
            steps = np.arange(1, length + 1, dtype=np.float64) / max(length, 1)
            pieces.append(begin + (end - begin) * steps)
            position += 1
        elif opcode == 2:
            if position + 1 >= len(words):
                break
            offset = int(words[position]) | (int(words[position + 1]) << 16)
            _expand(words, offset // 2, length, pieces, depth + 1)
            position += 2
        else:
            raise PaletteError(f"unknown segment type {opcode} in a segmented palette")
        done += 1
