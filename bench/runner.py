"""Runs the scenarios against one or two servers, interleaved round by round (A B A B …).

Order: the ingest scenarios (which store the bulk studies), then the fixture series the other
scenarios read (stored unmeasured), then every read scenario, then the large-object STOW last
(so that it cannot disturb the others). A server that already holds a group of the dataset
(same seed) is not loaded again: its ingest is reported ``skipped``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import orjson
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from bench.client import Failed, Target, Unsupported, call, open_session
from bench.dataset import Dataset
from bench.report import shown
from bench.scenarios import ingest_scenarios, read_scenarios
from bench.scenarios.base import Context, Outcome, Scenario, ScenarioResult
from bench.sizes import Size
from bench.stats import Sample
from bench.stow import stow_instances

FIXTURE_GROUPS = ("metadata", "frames_native", "frames_jpegls", "thumbnails")
LOAD_CLIENTS = 4


@dataclass(frozen=True)
class RunPlan:
    size: Size
    dataset: Dataset
    targets: list[Target]
    scratch: Path
    qido_profiles: dict[str, list[tuple[str, str]]]
    #: scenario ids to run (all when empty)
    only: frozenset[str] = frozenset()


class RateColumn(ProgressColumn):
    """Items per second, as rich estimates it from recent progress."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:>7.0f}/s" if speed else "       ", style="progress.data.speed")


def progress_bar(console: Console) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description:<24}"),
        BarColumn(bar_width=30),
        MofNCompleteColumn(),
        TextColumn("{task.fields[mb]:>8.1f} MB"),
        RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


async def _holds(context: Context, target: Target, group: str) -> bool:
    """Does the server already hold the last instance of ``group`` (loaded in order)?"""
    series = context.dataset.groups[group].series
    if not series:
        return False
    last = series[-1].instances[-1]
    url = f"{target.url}/studies/{last.study_uid}/series/{last.series_uid}/instances"
    try:
        reply = await call(
            context.session(target),
            "GET",
            url,
            params=[("SOPInstanceUID", last.sop_uid)],
            headers={"Accept": "application/dicom+json"},
            keep_body=True,
        )
    except (Unsupported, Failed):
        return False
    return reply.status == 200 and len(orjson.loads(reply.body)) > 0


async def _load(context: Context, target: Target, group: str) -> None:
    """Store a fixture group on one server (unmeasured); remember a failure for scenarios."""
    instances = context.dataset.groups[group].instances
    if not instances or group in context.preloaded[target.key]:
        return
    task = context.progress.add_task(f"load {group} {target.key}", total=len(instances), mb=0.0)
    loaded = 0.0

    def advance(count: int, size: int) -> None:
        nonlocal loaded
        loaded += size / 1e6
        context.progress.update(task, advance=count, mb=loaded)

    try:
        await stow_instances(
            context.session(target),
            target.url,
            context.dataset,
            group,
            instances,
            batch=context.size.batch,
            clients=LOAD_CLIENTS,
            budget=context.size.load_seconds,
            on_batch=advance,
        )
    except Unsupported as error:
        context.setup_failures[(target.key, group)] = error
    except Failed as error:
        context.setup_failures[(target.key, group)] = Unsupported(None, str(error))
    finally:
        context.progress.remove_task(task)


def _start(scenario: Scenario, context: Context) -> tuple[dict[str, Outcome], dict[str, Sample]]:
    """Servers left out before the first round (with why), and a sample for each other."""
    outcomes: dict[str, Outcome] = {}
    samples: dict[str, Sample] = {}
    unavailable = scenario.unavailable()
    for target in context.targets:
        if unavailable:
            outcomes[target.key] = Outcome("unsupported", reason=unavailable)
            continue
        skipped = scenario.skipped(target)
        if skipped:
            outcomes[target.key] = Outcome("skipped", reason=skipped)
            continue
        failed = [
            (group, context.setup_failures[(target.key, group)])
            for group in scenario.needs
            if (target.key, group) in context.setup_failures
        ]
        if failed:
            group, error = failed[0]
            outcomes[target.key] = Outcome(
                "unsupported",
                http_status=error.status,
                reason=f"storing the {group} series failed: {error.reason}",
            )
            continue
        samples[target.key] = Sample()
    return outcomes, samples


def _finish(scenario: Scenario, sample: Sample) -> Outcome:
    try:
        values = scenario.values(sample)
    except (ValueError, KeyError, IndexError, ZeroDivisionError) as error:
        return Outcome("error", reason=f"nothing measured ({type(error).__name__}: {error})")
    notes = list(sample.notes)
    if sample.truncated:
        notes.append("time budget reached: fewer requests than planned")
    details = {"requests": sample.requests, "seconds": round(sample.seconds, 3), **sample.details}
    return Outcome("measured", values=values, details=details, notes=notes)


async def run_scenario(scenario: Scenario, context: Context) -> ScenarioResult:
    outcomes, samples = _start(scenario, context)
    task = context.progress.add_task(
        scenario.id, total=scenario.rounds * max(1, len(samples)), mb=0.0
    )
    for index in range(scenario.rounds):
        for target in context.targets:
            if target.key not in samples or target.key in outcomes:
                continue
            try:
                samples[target.key].add(await scenario.run_round(target, index))
            except Unsupported as error:
                outcomes[target.key] = Outcome(
                    "unsupported", http_status=error.status, reason=error.reason
                )
            except Failed as error:
                outcomes[target.key] = Outcome("error", reason=str(error))
            context.progress.update(task, advance=1)
    context.progress.remove_task(task)
    scenario.close()
    for key, sample in samples.items():
        if key not in outcomes:
            outcomes[key] = _finish(scenario, sample)
    result = ScenarioResult(
        scenario.id,
        scenario.title,
        scenario.metrics,
        {t.key: outcomes[t.key] for t in context.targets},
    )
    context.progress.console.print(_one_line(result))
    return result


def _one_line(result: ScenarioResult) -> str:
    parts = []
    for key, outcome in result.outcomes.items():
        if outcome.status == "measured":
            first = result.metrics[0]
            value = outcome.values.get(first.key)
            parts.append(f"{key} {'-' if value is None else shown(first, value)}")
        else:
            status = f" {outcome.http_status}" if outcome.http_status else ""
            parts.append(f"{key} {outcome.status}{status}")
    return f"[green]✓[/] {result.id:<18} " + " · ".join(parts)


async def run(plan: RunPlan, console: Console) -> list[ScenarioResult]:
    results: list[ScenarioResult] = []
    async with contextlib.AsyncExitStack() as stack:
        sessions = {t.key: await stack.enter_async_context(open_session()) for t in plan.targets}
        progress = stack.enter_context(progress_bar(console))
        context = Context(
            size=plan.size,
            dataset=plan.dataset,
            targets=plan.targets,
            sessions=sessions,
            progress=progress,
            scratch=plan.scratch,
            qido_profiles=plan.qido_profiles,
        )
        for target in plan.targets:
            context.preloaded[target.key] = {
                group for group in ("bulk", *FIXTURE_GROUPS) if await _holds(context, target, group)
            }

        def wanted(scenario: Scenario) -> bool:
            return not plan.only or scenario.id in plan.only

        ingest = [s for s in ingest_scenarios(context) if wanted(s)]
        for scenario in ingest:
            results.append(await run_scenario(scenario, context))
        groups = list(FIXTURE_GROUPS)
        if len(ingest) < 2:
            groups.insert(0, "bulk")  # not (fully) stored by the ingest scenarios
        for target in plan.targets:
            for group in groups:
                await _load(context, target, group)
        for scenario in read_scenarios(context):
            if wanted(scenario):
                results.append(await run_scenario(scenario, context))
    return results
