"""VOI LUT: modality values → display values (PS3.3 §C.11.2, PS3.4 §N.2.1.2).

A window (Window Center (0028,1050) / Window Width (0028,1051)) with the VOI LUT Function
(0028,1056) LINEAR, LINEAR_EXACT or SIGMOID (PS3.3 §C.11.2.1.2, §C.11.2.1.3), or a VOI LUT
Sequence (0028,3010). Output values lie in [0, 255] (``y_min``/``y_max`` of the formulas),
still unrounded: the presentation step inverts and rounds them.

Which VOI applies (the first that exists): the request's ``window`` (PS3.18 §8.3.5.1.4) →
the frame's first Window Center/Width (with its VOI LUT Function) → its first VOI LUT →
the range of the frame's modality values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from pydicom.multival import MultiValue

from tessera_common.rendering import VoiFunction, Window

from .functional_groups import FrameAttributes
from .lut import LookupTable, is_little_endian, lookup_table

Y_MIN = 0.0
Y_MAX = 255.0


def apply_window(
    values: np.ndarray, center: float, width: float, function: VoiFunction = "LINEAR"
) -> np.ndarray:
    """PS3.3 §C.11.2.1.2.1 (LINEAR), §C.11.2.1.3.1 (SIGMOID), §C.11.2.1.3.2 (LINEAR_EXACT)."""
    x = np.asarray(values, dtype=np.float64)
    span = Y_MAX - Y_MIN
    if function == "SIGMOID":
        with np.errstate(over="ignore"):
            return span / (1.0 + np.exp(-4.0 * (x - center) / width)) + Y_MIN
    if function == "LINEAR_EXACT":
        low, high = center - width / 2.0, center + width / 2.0
        ramp = ((x - center) / width + 0.5) * span + Y_MIN
    else:
        low = center - 0.5 - (width - 1.0) / 2.0
        high = center - 0.5 + (width - 1.0) / 2.0
        # width 1 leaves no ramp: every value is at or below ``low`` or above ``high``.
        ramp = ((x - (center - 0.5)) / max(width - 1.0, 1e-12) + 0.5) * span + Y_MIN
    return np.where(x <= low, Y_MIN, np.where(x > high, Y_MAX, ramp))


@dataclass(frozen=True, slots=True)
class VoiTransform:
    """The VOI in force for a frame; ``source`` says where it came from."""

    window: Window | None = None
    lut: LookupTable | None = None
    source: str = "request"

    def apply(self, values: np.ndarray) -> np.ndarray:
        if self.lut is not None:
            scale = (Y_MAX - Y_MIN) / self.lut.largest_output
            return self.lut.apply(values) * scale + Y_MIN
        assert self.window is not None
        return apply_window(values, self.window.center, self.window.width, self.window.function)

    def label(self) -> str:
        """Short text for the technique annotation."""
        if self.window is None:
            return "VOI LUT"
        return f"C {self.window.center:g} W {self.window.width:g}"


def choose_voi(
    requested: Window | None,
    attributes: FrameAttributes,
    value_range: Callable[[], tuple[float, float]],
) -> VoiTransform:
    """``value_range`` is only called when nothing else applies: it gives the smallest and
    largest modality value the window must span."""
    if requested is not None:
        return VoiTransform(window=requested, source="request")
    window = object_window(attributes)
    if window is not None:
        return VoiTransform(window=window, source="object")
    sequence = attributes.get("VOILUTSequence")
    if sequence:
        lut = lookup_table(sequence[0], is_little_endian(attributes.header))
        if lut is not None:
            return VoiTransform(lut=lut, source="VOI LUT")
    low, high = value_range()
    return VoiTransform(window=range_window(low, high), source="range")


def range_window(low: float, high: float) -> Window:
    """A LINEAR_EXACT window mapping ``low`` to black and ``high`` to white; a constant image
    is black."""
    if high <= low:
        return Window(center=low + 0.5, width=1.0, function="LINEAR")
    return Window(center=(low + high) / 2.0, width=high - low, function="LINEAR_EXACT")


def object_window(attributes: FrameAttributes) -> Window | None:
    """The first Window Center/Width pair and the VOI LUT Function; a width the function
    does not allow (PS3.3 §C.11.2.1.2: ≥ 1 for LINEAR, > 0 otherwise) is ignored."""
    center = _first_number(attributes.get("WindowCenter"))
    width = _first_number(attributes.get("WindowWidth"))
    if center is None or width is None:
        return None
    name = str(attributes.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    function: VoiFunction = "LINEAR"
    if name == "LINEAR_EXACT":
        function = "LINEAR_EXACT"
    elif name == "SIGMOID":
        function = "SIGMOID"
    if width <= 0 or (function == "LINEAR" and width < 1):
        return None
    return Window(center=center, width=width, function=function)


def _first_number(value: object) -> float | None:
    if isinstance(value, MultiValue | list | tuple):
        value = value[0] if len(value) else None
    if value is None:
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None
