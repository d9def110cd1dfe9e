"""Scenario 1: STOW ingest, instances/s and MB/s, with one client and with four.

The bulk studies are the workload: the first ``single_client_studies`` are stored by one
client, the rest by four, each part cut into rounds of whole studies so that both servers
receive the same studies in turn. Storing them is also how the dataset gets onto the server.
"""

from __future__ import annotations

from rich.progress import TaskID

from bench.client import Target
from bench.dataset import InstanceRef
from bench.scenarios.base import Context, Metric, Scenario
from bench.stats import Sample
from bench.stow import stow_instances

METRICS = (
    Metric("instances_per_s", "instances/s", "1/s", "higher"),
    Metric("mb_per_s", "MB/s", "MB/s", "higher"),
)


class Ingest(Scenario):
    metrics = METRICS
    clients: int

    def __init__(self, context: Context, studies: list[str]):
        super().__init__(context)
        wanted = set(studies)
        bulk = context.dataset.groups["bulk"]
        by_study: dict[str, list[InstanceRef]] = {}
        for series in bulk.series:
            if series.study_uid in wanted:
                by_study.setdefault(series.study_uid, []).extend(series.instances)
        ordered = [by_study[uid] for uid in studies if uid in by_study]
        rounds = max(1, min(context.size.rounds, len(ordered)))
        self._chunks = [[i for study in ordered[r::rounds] for i in study] for r in range(rounds)]
        self._tasks: dict[str, TaskID] = {}
        self._megabytes: dict[str, float] = {}

    @property
    def rounds(self) -> int:
        return len(self._chunks)

    def budget(self) -> float:
        return self.context.size.load_seconds / 2 / self.rounds

    def skipped(self, target: Target) -> str | None:
        if "bulk" in self.context.preloaded.get(target.key, set()):
            return "the dataset was already on this server; run against an empty one to measure"
        return None

    def _task(self, target: Target) -> TaskID:
        if target.key not in self._tasks:
            total = sum(len(c) for c in self._chunks)
            self._tasks[target.key] = self.context.progress.add_task(
                f"{self.id} {target.key}", total=total, mb=0.0
            )
        return self._tasks[target.key]

    async def run_round(self, target: Target, index: int) -> Sample:
        task = self._task(target)
        stored = 0

        def advance(instances: int, size: int) -> None:
            nonlocal stored
            stored += instances
            self._megabytes[target.key] = self._megabytes.get(target.key, 0.0) + size / 1e6
            self.context.progress.update(task, advance=instances, mb=self._megabytes[target.key])

        load = await stow_instances(
            self.context.session(target),
            target.url,
            self.context.dataset,
            "bulk",
            self._chunks[index],
            batch=self.context.size.batch,
            clients=self.clients,
            budget=self.budget(),
            on_batch=advance,
        )
        return Sample(
            seconds=load.seconds,
            requests=load.requests,
            items=stored,
            bytes=load.bytes,
            latencies={"request": load.latencies},
            details={"clients": self.clients, "batch": self.context.size.batch},
            truncated=load.truncated,
        )

    def close(self) -> None:
        for task in self._tasks.values():
            self.context.progress.remove_task(task)

    def values(self, sample: Sample) -> dict[str, float]:
        return {
            "instances_per_s": sample.rate(sample.items),
            "mb_per_s": sample.rate(sample.bytes / 1e6),
        }


class IngestOneClient(Ingest):
    id = "ingest_1"
    title = "STOW ingest, 1 client"
    clients = 1


class IngestFourClients(Ingest):
    id = "ingest_4"
    title = "STOW ingest, 4 clients"
    clients = 4
