"""Modality LUT: stored values → modality values (PS3.3 §C.11.1, PS3.4 §N.2.1.1).

Either Rescale Slope (0028,1053) / Rescale Intercept (0028,1052) — for Enhanced objects in
the Pixel Value Transformation Sequence (0028,9145) — or a Modality LUT Sequence (0028,3000).
Colour images have no modality transformation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .functional_groups import FrameAttributes
from .lut import LookupTable, is_little_endian, lookup_table


@dataclass(frozen=True, slots=True)
class ModalityTransform:
    slope: float = 1.0
    intercept: float = 0.0
    lut: LookupTable | None = None

    @property
    def is_identity(self) -> bool:
        return self.lut is None and self.slope == 1.0 and self.intercept == 0.0

    def apply(self, stored: np.ndarray) -> np.ndarray:
        """Modality values (float64) of stored values."""
        if self.lut is not None:
            return self.lut.apply(stored)
        values = stored.astype(np.float64)
        if self.slope != 1.0:
            values *= self.slope
        if self.intercept != 0.0:
            values += self.intercept
        return values


def modality_transform(attributes: FrameAttributes) -> ModalityTransform:
    """The frame's transform; a Modality LUT Sequence is used only without Rescale Slope
    (the two are mutually exclusive, PS3.3 §C.11.1)."""
    slope = attributes.get("RescaleSlope")
    intercept = attributes.get("RescaleIntercept")
    if slope is None and intercept is None:
        sequence = attributes.get("ModalityLUTSequence")
        if sequence:
            lut = lookup_table(sequence[0], is_little_endian(attributes.header))
            if lut is not None:
                return ModalityTransform(lut=lut)
        return ModalityTransform()
    try:
        slope_value = float(slope) if slope is not None else 1.0
        intercept_value = float(intercept) if intercept is not None else 0.0
    except (TypeError, ValueError):
        return ModalityTransform()
    if not np.isfinite(slope_value) or slope_value == 0.0 or not np.isfinite(intercept_value):
        return ModalityTransform()
    return ModalityTransform(slope=slope_value, intercept=intercept_value)
