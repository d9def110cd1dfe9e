"""Percentiles and the accumulated measurements of one scenario on one server."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linear between the two nearest ranks."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Sample:
    """Measurements of one server, added up over the rounds of a scenario."""

    #: wall time of the measured work
    seconds: float = 0.0
    requests: int = 0
    #: the scenario's unit of work: instances stored, frames, images ...
    items: int = 0
    bytes: int = 0
    #: named latency series, in seconds
    latencies: dict[str, list[float]] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    truncated: bool = False

    def add(self, other: Sample) -> None:
        self.seconds += other.seconds
        self.requests += other.requests
        self.items += other.items
        self.bytes += other.bytes
        for name, values in other.latencies.items():
            self.latencies.setdefault(name, []).extend(values)
        self.details.update(other.details)
        self.notes.extend(n for n in other.notes if n not in self.notes)
        self.truncated = self.truncated or other.truncated

    def rate(self, amount: float) -> float:
        """``amount`` per second; nothing done is an error, never a rate of zero."""
        if self.seconds <= 0 or amount <= 0:
            raise ValueError("nothing was measured")
        return amount / self.seconds

    def millis(self, name: str, q: float) -> float:
        return percentile(self.latencies[name], q) * 1000
