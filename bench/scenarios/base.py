"""What a scenario is, what it reports, and the context it runs in.

A scenario runs in rounds; the runner gives each round to every server in turn (A B A B …), so
that drift of the machine (page cache, thermal, other load) hits both servers alike. A round
returns a ``Sample``; the samples of one server are added up and turned into the scenario's
metric values. A server that answers 4xx/5xx is out of the scenario (``unsupported``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
from rich.progress import Progress

from bench.client import Target, Unsupported
from bench.dataset import Dataset, InstanceRef
from bench.sizes import Size
from bench.stats import Sample

Better = Literal["higher", "lower"]
Status = Literal["measured", "unsupported", "error", "skipped"]


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    better: Better

    def ratio(self, a: float, b: float) -> float | None:
        """A versus B, oriented so that > 1 means A is better (faster, lower latency)."""
        if a <= 0 or b <= 0 or not (math.isfinite(a) and math.isfinite(b)):
            return None
        return a / b if self.better == "higher" else b / a


@dataclass
class Outcome:
    """One scenario on one server."""

    status: Status
    values: dict[str, float] = field(default_factory=dict)
    http_status: int | None = None
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"status": self.status}
        if self.values:
            data["values"] = self.values
        if self.http_status is not None:
            data["http_status"] = self.http_status
        if self.reason:
            data["reason"] = self.reason
        if self.details:
            data["details"] = self.details
        if self.notes:
            data["notes"] = self.notes
        return data


@dataclass
class ScenarioResult:
    id: str
    title: str
    metrics: tuple[Metric, ...]
    outcomes: dict[str, Outcome]

    def ratios(self) -> dict[str, float]:
        a, b = self.outcomes.get("A"), self.outcomes.get("B")
        if a is None or b is None or a.status != "measured" or b.status != "measured":
            return {}
        ratios = {}
        for metric in self.metrics:
            if metric.key in a.values and metric.key in b.values:
                ratio = metric.ratio(a.values[metric.key], b.values[metric.key])
                if ratio is not None:
                    ratios[metric.key] = ratio
        return ratios

    def work(self) -> dict[str, str]:
        """What each measured server did, where the scenario records it (``details["work"]``:
        studies a search returned, the transfer syntax frames were sent in …)."""
        return {
            key: str(o.details["work"])
            for key, o in self.outcomes.items()
            if o.status == "measured" and "work" in o.details
        }

    @property
    def comparable(self) -> bool:
        """False when the servers did unequal work (e.g. a search found fewer studies)."""
        return len(set(self.work().values())) <= 1

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "metrics": [
                {"key": m.key, "label": m.label, "unit": m.unit, "better": m.better}
                for m in self.metrics
            ],
            "results": {key: outcome.as_json() for key, outcome in self.outcomes.items()},
            "ratios": self.ratios(),
            "comparable": self.comparable,
        }


@dataclass
class Context:
    """Everything a scenario may use; built once per run by the runner."""

    size: Size
    dataset: Dataset
    targets: list[Target]
    sessions: dict[str, aiohttp.ClientSession]
    progress: Progress
    scratch: Path
    #: query profiles of the QIDO scenarios: id -> query parameters
    qido_profiles: dict[str, list[tuple[str, str]]]
    #: per server: dataset groups it already held before this run
    preloaded: dict[str, set[str]] = field(default_factory=dict)
    #: per server and group: why storing a fixture group failed
    setup_failures: dict[tuple[str, str], Unsupported] = field(default_factory=dict)

    def session(self, target: Target) -> aiohttp.ClientSession:
        return self.sessions[target.key]

    def instance_url(self, target: Target, instance: InstanceRef) -> str:
        return (
            f"{target.url}/studies/{instance.study_uid}/series/{instance.series_uid}"
            f"/instances/{instance.sop_uid}"
        )


class Scenario(ABC):
    id: str
    title: str
    metrics: tuple[Metric, ...]
    #: dataset groups that must be stored on a server before the scenario runs there
    needs: tuple[str, ...] = ()

    def __init__(self, context: Context):
        self.context = context

    @property
    def rounds(self) -> int:
        return self.context.size.rounds

    def unavailable(self) -> str | None:
        """Why the scenario cannot run on any server (e.g. no JPEG-LS data), else None."""
        for group in self.needs:
            missing = self.context.dataset.groups[group].missing
            if missing:
                return missing
        return None

    def skipped(self, target: Target) -> str | None:
        """Why this server is left out without being at fault, else None."""
        return None

    def budget(self) -> float:
        """Seconds one round may take on one server."""
        return self.context.size.scenario_seconds / self.rounds

    def close(self) -> None:  # noqa: B027 - an optional hook, not an abstract step
        """Called once after the last round (e.g. to remove progress bars)."""

    @abstractmethod
    async def run_round(self, target: Target, index: int) -> Sample:
        """Measure round ``index`` on ``target``."""

    @abstractmethod
    def values(self, sample: Sample) -> dict[str, float]:
        """The metric values of everything measured on one server."""


def share(total: int, rounds: int, index: int) -> int:
    """Round ``index``'s part of ``total`` requests spread over ``rounds``."""
    return total // rounds + (1 if index < total % rounds else 0)
