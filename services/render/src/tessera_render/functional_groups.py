"""The attributes that apply to one frame (PS3.3 §C.7.6.16, Multi-frame Functional Groups).

An Enhanced multi-frame object moves frame-level attributes (Rescale Slope/Intercept in the
Pixel Value Transformation Sequence (0028,9145), Window Center/Width in the Frame VOI LUT
Sequence (0028,9132), exposure and optical path details, …) into macros of the Shared
(5200,9229) and Per-frame (5200,9230) Functional Groups Sequences. ``FrameAttributes`` looks
an attribute up in the frame's own macros first, then the shared ones, then the top level, so
the pixel pipeline reads ``RescaleSlope`` the same way for every kind of image.
"""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset


class FrameAttributes:
    """Read-only view of the attributes in force for frame ``number`` (1-based)."""

    __slots__ = ("_macros", "header", "number")

    def __init__(self, header: Dataset, number: int) -> None:
        self.header = header
        self.number = number
        self._macros: dict[str, Any] = {}
        shared = _first_item(header, "SharedFunctionalGroupsSequence")
        per_frame = header.get("PerFrameFunctionalGroupsSequence")
        frame = per_frame[number - 1] if per_frame and 0 < number <= len(per_frame) else None
        for group in (shared, frame):  # the frame's own macros win (PS3.3 §C.7.6.16.1)
            if group is None:
                continue
            for macro in group:
                if macro.VR != "SQ" or not macro.value:
                    continue
                for element in macro.value[0]:
                    if element.keyword:
                        self._macros[element.keyword] = element.value

    def get(self, keyword: str, default: Any = None) -> Any:
        if keyword in self._macros:
            value = self._macros[keyword]
            return default if value is None else value
        value = self.header.get(keyword, default)
        return default if value is None else value

    def __contains__(self, keyword: str) -> bool:
        return self.get(keyword) is not None


def _first_item(header: Dataset, keyword: str) -> Dataset | None:
    sequence = header.get(keyword)
    return sequence[0] if sequence else None
