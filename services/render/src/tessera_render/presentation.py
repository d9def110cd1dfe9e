"""Presentation LUT: display values → P-values (PS3.3 §C.11.6, PS3.4 §N.2.1.3).

Presentation LUT Shape (2050,0020) IDENTITY keeps the VOI output, INVERSE inverts it; an
image without the attribute is inverted when it is MONOCHROME1 (minimum value = white,
PS3.3 §C.7.6.3.1.2). A MONOCHROME1 image that claims IDENTITY contradicts its IOD (PS3.3
§C.8.11.6.1.2 requires INVERSE) and is inverted all the same: the photometric interpretation
decides what the stored values mean.
"""

from __future__ import annotations

import numpy as np

from .functional_groups import FrameAttributes
from .windowing import Y_MAX, Y_MIN


def inverts(attributes: FrameAttributes, photometric_interpretation: str) -> bool:
    shape = str(attributes.get("PresentationLUTShape", "") or "").strip().upper()
    return photometric_interpretation == "MONOCHROME1" or shape == "INVERSE"


def p_values(display: np.ndarray, invert: bool) -> np.ndarray:
    """8-bit P-values of VOI output in [0, 255]: inverted if asked, rounded half up."""
    values = (Y_MAX + Y_MIN) - display if invert else display
    return np.clip(np.floor(values + 0.5), 0, 255).astype(np.uint8)
