"""The results as a rich table and as JSON, with A-versus-B ratios and issue 8's targets."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

from bench.client import Target
from bench.dataset import Dataset
from bench.scenarios.base import Metric, Outcome, ScenarioResult

JSON_VERSION = 1
TIMES = "\u00d7"


@dataclass(frozen=True)
class Goal:
    """One of issue 8's targets: A must beat B by ``ratio`` on a scenario's metric."""

    scenario: str
    metric: str
    ratio: float
    label: str


GOALS = (
    Goal("ingest_1", "instances_per_s", 2.0, "ingest ≥ 2x (1 client)"),
    Goal("ingest_4", "instances_per_s", 2.0, "ingest ≥ 2x (4 clients)"),
    Goal("qido_search", "p50_ms", 3.0, "QIDO study list ≥ 3x (OHIF search)"),
    Goal("qido_worklist", "p50_ms", 3.0, "QIDO study list ≥ 3x (OHIF first page)"),
    Goal("series_metadata", "first_ms", 10.0, "series metadata ≥ 10x (first)"),
    Goal("series_metadata", "warm_p50_ms", 10.0, "series metadata ≥ 10x (warm)"),
    Goal("frames_native", "frames_per_s", 2.0, "frames ≥ 2x (native)"),
    Goal("frames_jpegls", "frames_per_s", 2.0, "frames ≥ 2x (JPEG-LS as stored)"),
    Goal("frames_jpegls_ohif", "frames_per_s", 2.0, "frames ≥ 2x (JPEG-LS, OHIF's Accept)"),
    Goal("rendered", "images_per_s", 1.5, "rendered ≥ 1.5x"),
)


def number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def shown(metric: Metric, value: float) -> str:
    """A metric's value with its unit, as the table shows it."""
    unit = "/s" if metric.unit == "1/s" else f" {metric.unit}"
    return f"{number(value)}{unit}"


def _cell(outcome: Outcome | None, metric: Metric, first_row: bool) -> str:
    if outcome is None:
        return "-"
    if outcome.status != "measured":
        if not first_row:
            return ""
        status = f" {outcome.http_status}" if outcome.http_status else ""
        return f"[yellow]{outcome.status}{status}[/]"
    value = outcome.values.get(metric.key)
    return "-" if value is None else shown(metric, value)


def _ratio_cell(ratio: float | None, comparable: bool) -> str:
    if ratio is None:
        return "-"
    colour = "green" if ratio >= 1 else "red"
    mark = "" if comparable else " [yellow]≠[/]"
    return f"[{colour}]{ratio:.2f}{TIMES}[/]{mark}"


def results_table(results: list[ScenarioResult], targets: list[Target], title: str) -> Table:
    table = Table(title=title, show_lines=False)
    table.add_column("scenario")
    table.add_column("metric")
    for target in targets:
        table.add_column(f"{target.key}: {target.label}", justify="right")
    compare = len(targets) == 2
    if compare:
        table.add_column("A vs B\n(>1: A better)", justify="right")
    for result in results:
        ratios = result.ratios()
        for row, metric in enumerate(result.metrics):
            cells = [result.id if row == 0 else "", metric.label]
            cells += [_cell(result.outcomes.get(t.key), metric, row == 0) for t in targets]
            if compare:
                cells.append(_ratio_cell(ratios.get(metric.key), result.comparable))
            table.add_row(*cells, end_section=row == len(result.metrics) - 1)
    return table


def goal_status(results: list[ScenarioResult]) -> list[dict[str, Any]]:
    by_id = {r.id: r for r in results}
    checks = []
    for goal in GOALS:
        result = by_id.get(goal.scenario)
        check: dict[str, Any] = {
            "goal": goal.label,
            "scenario": goal.scenario,
            "metric": goal.metric,
            "required": goal.ratio,
        }
        if result is None:
            check.update(status="not run")
        elif goal.metric in result.ratios():
            ratio = result.ratios()[goal.metric]
            check.update(ratio=ratio, status="met" if ratio >= goal.ratio else "missed")
        else:
            why = [
                f"{key}: {o.status}" + (f" {o.http_status}" if o.http_status else "")
                for key, o in result.outcomes.items()
                if o.status != "measured"
            ]
            check.update(status="not measurable", why=", ".join(why) or "no ratio")
        checks.append(check)
    return checks


def goals_table(results: list[ScenarioResult]) -> Table:
    table = Table(title="Issue 8 targets (A versus B)")
    table.add_column("target")
    table.add_column("ratio", justify="right")
    table.add_column("status")
    colours = {"met": "green", "missed": "red"}
    for check in goal_status(results):
        ratio = f"{check['ratio']:.2f}{TIMES}" if "ratio" in check else "-"
        status = check["status"] + (f" ({check['why']})" if "why" in check else "")
        colour = colours.get(check["status"], "yellow")
        table.add_row(check["goal"], ratio, f"[{colour}]{status}[/]")
    return table


def print_notes(console: Console, results: list[ScenarioResult]) -> None:
    """Reasons for unsupported scenarios, result mismatches and RSS breakdowns."""
    for result in results:
        if not result.comparable:
            work = ", ".join(f"{k} {w}" for k, w in result.work().items())
            console.print(
                f"  [dim]{result.id}:[/] [yellow]≠[/] the servers did different work ({work}): "
                "the ratio compares unequal work"
            )
        for key, outcome in result.outcomes.items():
            lines = []
            if outcome.reason:
                status = f"{outcome.http_status}: " if outcome.http_status else ""
                lines.append(f"{outcome.status}: {status}{outcome.reason}")
            lines += outcome.notes
            peaks = outcome.details.get("peak_rss_mib")
            if isinstance(peaks, dict):
                lines.append(
                    "peak RSS: " + ", ".join(f"{name} {mib:.0f} MiB" for name, mib in peaks.items())
                )
            for line in lines:
                console.print(f"  [dim]{result.id} {key}:[/] {line}", highlight=False)


def to_json(
    results: list[ScenarioResult],
    targets: list[Target],
    dataset: Dataset,
    *,
    started: datetime,
    seconds: float,
    busy_before: float,
) -> dict[str, Any]:
    return {
        "version": JSON_VERSION,
        "started": started.astimezone(UTC).isoformat(timespec="seconds"),
        "seconds": round(seconds, 1),
        "machine": {
            "cpus": psutil.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu_busy_percent_before": round(busy_before, 1),
            "load_average_after": [round(v, 2) for v in psutil.getloadavg()],
        },
        "targets": [{"key": t.key, "url": t.url, "label": t.label, "pid": t.pid} for t in targets],
        "dataset": dataset.summary(),
        "scenarios": [r.as_json() for r in results],
        "goals": goal_status(results) if len(targets) == 2 else [],
    }
