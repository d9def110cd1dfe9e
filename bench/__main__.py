"""Tessera benchmark suite: ``python -m bench --help`` (or ``./run bench --help``).

See bench/README.md for the sizes, the scenarios and how to read the ratios.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Annotated
from urllib.parse import parse_qsl

import psutil
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from bench import dataset as datasets
from bench import report
from bench.client import Target
from bench.ingest import stow_ingest
from bench.rss import PeakRss
from bench.runner import RunPlan
from bench.runner import run as run_scenarios
from bench.scenarios import all_ids
from bench.scenarios.qido import default_profiles
from bench.servers import embedded_tessera
from bench.sizes import SIZES, Size
from bench.synthetic import ct_series

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)
#: Wide enough for the results table when the output is a log file rather than a terminal.
console = Console(width=None if sys.stdout.isatty() else 150)
RESULTS = Path(__file__).resolve().parent / "results"
#: CPU use (all cores, sampled before the run) above which the run warns that it is disturbed
BUSY_PERCENT = 25.0
BUSY_SAMPLE_SECONDS = 1.0


class SizeName(StrEnum):
    tiny = "tiny"
    small = "small"
    medium = "medium"
    large = "large"


@app.callback()
def main() -> None:
    """Benchmarks against any DICOMweb server (default: an embedded Tessera started here)."""


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM as if Ctrl-C: asyncio.run then cancels the run cleanly."""
    signal.raise_signal(signal.SIGINT)


def _unwind_on_signals() -> None:
    """Ctrl-C and SIGTERM both unwind the run (stopping the embedded Tessera), also when a
    parent shell started the bench with SIGINT ignored (a background job)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)


def _dataset(size: Size, seed: int, cache: Path) -> datasets.Dataset:
    root = cache / f"{size.name}-seed{seed}-v{datasets.DATASET_VERSION}"
    if (root / "manifest.json").exists():
        return datasets.load(size, seed, cache)
    total = datasets.expected_instances(size, seed)
    with Progress(
        TextColumn("[bold]generating {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        task = progress.add_task(f"{size.name} dataset (seed {seed})", total=total)
        return datasets.load(size, seed, cache, lambda n: progress.advance(task, n))


def _profiles(
    dataset: datasets.Dataset, options: Sequence[str]
) -> dict[str, list[tuple[str, str]]]:
    profiles = default_profiles(dataset.studies)
    for option in options:
        name, separator, query = option.partition("=")
        if not separator or not name.strip():
            raise typer.BadParameter(f"--qido wants ID=QUERY, got {option!r}")
        profiles[name.strip()] = parse_qsl(query, keep_blank_values=True)
    return profiles


@app.command()
def run(
    url: Annotated[
        str | None,
        typer.Option(help="DICOMweb root of server A; default: start an embedded Tessera"),
    ] = None,
    compare: Annotated[
        str | None,
        typer.Option(help="DICOMweb root of server B, run interleaved with A (A B A B …)"),
    ] = None,
    size: Annotated[SizeName, typer.Option(help="dataset and request counts")] = SizeName.small,
    seed: Annotated[int, typer.Option(help="dataset seed")] = 0,
    output: Annotated[
        Path | None, typer.Option(help="JSON results; default bench/results/<size>-….json")
    ] = None,
    scenario: Annotated[
        list[str] | None, typer.Option(help="run only this scenario id (repeatable)")
    ] = None,
    qido: Annotated[
        list[str] | None,
        typer.Option(help="QIDO profile ID=QUERY (repeatable); replaces or adds a profile"),
    ] = None,
    label: Annotated[str | None, typer.Option(help="name of server A in the table")] = None,
    compare_label: Annotated[str | None, typer.Option(help="name of server B")] = None,
    pid: Annotated[
        int | None, typer.Option(help="root pid of server A's processes (peak RSS), with --url")
    ] = None,
    compare_pid: Annotated[
        int | None, typer.Option(help="root pid of server B's processes (peak RSS)")
    ] = None,
    cache_dir: Annotated[
        Path, typer.Option(help="where generated datasets are cached")
    ] = datasets.DEFAULT_CACHE,
    port: Annotated[int | None, typer.Option(help="port of the embedded Tessera")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="data directory of the embedded Tessera (default: temp)")
    ] = None,
) -> None:
    """Load the synthetic dataset into one or two servers and run every scenario."""
    _unwind_on_signals()
    options = RunOptions(
        url=url,
        compare=compare,
        size=SIZES[size.value],
        seed=seed,
        output=output,
        scenarios=tuple(scenario or ()),
        qido=tuple(qido or ()),
        label=label,
        compare_label=compare_label,
        pid=pid,
        compare_pid=compare_pid,
        cache_dir=cache_dir,
        port=port,
        data_dir=data_dir,
    )
    try:
        _run(options)
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]: the embedded Tessera (if any) was stopped")
        raise typer.Exit(130) from None


@dataclass(frozen=True)
class RunOptions:
    """The options of ``bench run`` (see its --help)."""

    url: str | None
    compare: str | None
    size: Size
    seed: int
    output: Path | None
    scenarios: tuple[str, ...]
    qido: tuple[str, ...]
    label: str | None
    compare_label: str | None
    pid: int | None
    compare_pid: int | None
    cache_dir: Path
    port: int | None
    data_dir: Path | None


def _targets(options: RunOptions, stack: contextlib.ExitStack, scratch: Path) -> list[Target]:
    """Server A (started here when no --url) and, with --compare, server B."""
    if options.url is None:
        tessera_dir = options.data_dir or scratch / "tessera"
        console.print(f"starting an embedded Tessera (data in {tessera_dir})")
        root, root_pid = stack.enter_context(embedded_tessera(tessera_dir, options.port))
        targets = [Target("A", root, options.label or "tessera (embedded)", root_pid)]
    else:
        url = options.url.rstrip("/")
        targets = [Target("A", url, options.label or url, options.pid)]
    if options.compare:
        url = options.compare.rstrip("/")
        targets.append(Target("B", url, options.compare_label or url, options.compare_pid))
    return targets


def _run(options: RunOptions) -> None:
    started, clock = datetime.now().astimezone(), time.perf_counter()
    busy = psutil.cpu_percent(interval=BUSY_SAMPLE_SECONDS)
    if busy > BUSY_PERCENT:
        console.print(
            f"[yellow]warning:[/] the machine is busy ({busy:.0f}% CPU before the run): "
            "other work shares the CPUs with the servers, so results will be noisy"
        )
    chosen, seed = options.size, options.seed
    dataset = _dataset(chosen, seed, options.cache_dir)
    profiles = _profiles(dataset, options.qido)
    known = all_ids(list(profiles))
    unknown = sorted(set(options.scenarios) - set(known))
    if unknown:
        raise typer.BadParameter(f"unknown scenario {unknown}; known: {', '.join(known)}")
    with (
        tempfile.TemporaryDirectory(prefix="tessera-bench-") as scratch,
        contextlib.ExitStack() as stack,
    ):
        targets = _targets(options, stack, Path(scratch))
        plan = RunPlan(
            size=chosen,
            dataset=dataset,
            targets=targets,
            scratch=Path(scratch),
            qido_profiles=profiles,
            only=frozenset(options.scenarios),
        )
        results = asyncio.run(run_scenarios(plan, console))
    document = report.to_json(
        results,
        targets,
        dataset,
        started=started,
        seconds=time.perf_counter() - clock,
        busy_before=busy,
    )
    output = options.output or RESULTS / f"{chosen.name}-seed{seed}-{started:%Y%m%d-%H%M%S}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(document, indent=2, ensure_ascii=False))
    title = f"Tessera bench: size {chosen.name}, seed {seed}"
    console.print(report.results_table(results, targets, title))
    if len(targets) == 2:
        console.print(report.goals_table(results))
    report.print_notes(console, results)
    console.print(f"results: {output}")


@app.command()
def generate(
    size: Annotated[SizeName, typer.Option(help="dataset size")] = SizeName.small,
    seed: Annotated[int, typer.Option(help="dataset seed")] = 0,
    cache_dir: Annotated[Path, typer.Option(help="cache directory")] = datasets.DEFAULT_CACHE,
) -> None:
    """Generate (or find) the cached dataset of a size and seed, and describe it."""
    dataset = _dataset(SIZES[size.value], seed, cache_dir)
    console.print(f"dataset in {dataset.root}")
    console.print_json(json.dumps(dataset.summary(), ensure_ascii=False))


@app.command()
def ingest(
    count: Annotated[int, typer.Option(help="synthetic CT instances to store")] = 200,
    rows: Annotated[int, typer.Option(help="image rows and columns")] = 512,
    clients: Annotated[int, typer.Option(help="concurrent STOW clients")] = 1,
    batch: Annotated[int, typer.Option(help="instances per STOW request")] = 20,
    seed: Annotated[int, typer.Option(help="dataset seed")] = 0,
    url: Annotated[
        str | None,
        typer.Option(help="DICOMweb root of a running server; default: start embedded Tessera"),
    ] = None,
    port: Annotated[int, typer.Option(help="port for the embedded Tessera")] = 8099,
    output: Annotated[Path | None, typer.Option(help="write the result as JSON here")] = None,
) -> None:
    """STOW synthetic CT instances; report instances/s, MB/s and, for an embedded Tessera
    started here, the peak RSS of every process."""
    instances = list(ct_series(count, seed=seed, rows=rows, columns=rows))
    peaks: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="tessera-bench-") as scratch:
        if url is None:
            with embedded_tessera(Path(scratch) / "data", port) as (root, root_pid):
                with PeakRss(root_pid) as rss:
                    result = stow_ingest(root, instances, clients=clients, batch=batch)
                peaks = rss.peaks
        else:
            result = stow_ingest(url.rstrip("/"), instances, clients=clients, batch=batch)
    table = Table(
        title=f"STOW ingest: {count} CT {rows}x{rows}, {clients} client(s), {batch}/request"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("instances/s", f"{result.instances_per_second:.1f}")
    table.add_row("MB/s", f"{result.megabytes_per_second:.1f}")
    table.add_row("seconds", f"{result.seconds:.2f}")
    for name, peak in sorted(peaks.items()):
        table.add_row(f"peak RSS {name}", f"{peak / 2**20:.0f} MiB")
    console.print(table)
    if output is not None:
        output.write_text(
            json.dumps(
                {
                    "scenario": "ingest",
                    "count": count,
                    "rows": rows,
                    "clients": clients,
                    "batch": batch,
                    "instances_per_second": result.instances_per_second,
                    "megabytes_per_second": result.megabytes_per_second,
                    "seconds": result.seconds,
                    "peak_rss_bytes": peaks,
                },
                indent=2,
            )
        )


@app.command("render-workers")
def render_workers(
    workers: Annotated[
        list[int] | None, typer.Option(help="render process counts to compare (repeatable)")
    ] = None,
    count: Annotated[int, typer.Option(help="renders per worker count")] = 800,
    concurrency: Annotated[int, typer.Option(help="requests in flight")] = 8,
) -> None:
    """Rendered 512x512 CT JPEGs per second with 1, 2, … render processes (each a cold
    render), over the render queue group directly and over HTTP."""
    from bench.render_workers import measure

    counts = workers or [1, 2]
    table = Table(title=f"Render workers: {count} renders each, {concurrency} in flight")
    for column in ("render processes", "render.frame/s (NATS)", "/rendered/s (HTTP)"):
        table.add_column(column, justify="right")
    for result in measure(counts, count=count, concurrency=concurrency):
        table.add_row(
            str(result.workers), f"{result.bus_per_second:.0f}", f"{result.http_per_second:.0f}"
        )
    console.print(table)


if __name__ == "__main__":
    app()
