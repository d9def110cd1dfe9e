"""Frame display times of a multi-frame image (PS3.3 §C.7.6.5 Cine Module), for animated
GIFs: Frame Time (0018,1063), else Frame Time Vector (0018,1065), else Cine Rate (0018,0040)
or Recommended Display Frame Rate (0008,2144), else ``DEFAULT_MS``."""

from __future__ import annotations

from collections.abc import Sequence

from pydicom.dataset import Dataset

DEFAULT_MS = 100.0


def frame_durations(header: Dataset, numbers: Sequence[int]) -> list[float]:
    """Milliseconds each of the frames ``numbers`` (1-based) stays on screen."""
    frame_time = _positive(header.get("FrameTime"))
    if frame_time is not None:
        return [frame_time] * len(numbers)
    vector = header.get("FrameTimeVector")
    if vector is not None and not isinstance(vector, str | bytes):
        # Entry k is the time from frame k-1 to frame k; the first is 0 (PS3.3 §C.7.6.5.1.2).
        increments = [_positive(v) for v in vector]
        durations = []
        for number in numbers:
            following = increments[number] if number < len(increments) else None
            previous = increments[number - 1] if 0 < number <= len(increments) else None
            durations.append(following or previous or DEFAULT_MS)
        return durations
    for keyword in ("CineRate", "RecommendedDisplayFrameRate"):
        rate = _positive(header.get(keyword))
        if rate is not None:
            return [1000.0 / rate] * len(numbers)
    return [DEFAULT_MS] * len(numbers)


def _positive(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if number > 0 and number < 1e7 else None
