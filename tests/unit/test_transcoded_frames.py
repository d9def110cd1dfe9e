"""The gateway's memory of where the codec put transcoded frames (``transcoded``)."""

from __future__ import annotations

from tessera_common.messages import FrameLocation
from tessera_gateway.transcoded import TranscodedFrames

SHA = "ab" * 32
EXPLICIT = "1.2.840.10008.1.2.1"


def location(number: int) -> FrameLocation:
    return FrameLocation(number=number, key=f"derived/{SHA}/x/frames/{number}", offset=0, length=8)


def test_frames_are_remembered_by_bytes_syntax_and_number() -> None:
    frames = TranscodedFrames()
    frames.put((SHA, EXPLICIT, 1), location(1))
    assert frames.get((SHA, EXPLICIT, 1)) == location(1)
    assert frames.get((SHA, EXPLICIT, 2)) is None
    assert frames.get((SHA, "1.2.840.10008.1.2.4.80", 1)) is None
    assert frames.get(("cd" * 32, EXPLICIT, 1)) is None
    frames.forget((SHA, EXPLICIT, 1))
    assert frames.get((SHA, EXPLICIT, 1)) is None


def test_the_least_recently_used_go_first() -> None:
    frames = TranscodedFrames(capacity=2)
    frames.put((SHA, EXPLICIT, 1), location(1))
    frames.put((SHA, EXPLICIT, 2), location(2))
    assert frames.get((SHA, EXPLICIT, 1)) is not None
    frames.put((SHA, EXPLICIT, 3), location(3))
    assert frames.get((SHA, EXPLICIT, 2)) is None
    assert frames.get((SHA, EXPLICIT, 1)) is not None
