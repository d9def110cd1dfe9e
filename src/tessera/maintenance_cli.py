"""``tessera reindex | verify | gc``: object storage is the system of record (docs/DURABILITY.md).

The command functions are registered on the main app by ``tessera.cli``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.filesize import decimal
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

MAINTENANCE = "Maintenance: object storage is the system of record"
EXIT_USAGE = 2

DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Embedded mode's data directory (objects and SQLite index); default "
        "`./tessera-data`, env `TESSERA_DATA_DIR`. Distributed deployments are described by "
        "`TESSERA_BLOB_BACKEND`, `TESSERA_S3_*`, `TESSERA_INDEX_BACKEND`, `TESSERA_MONGODB_*`.",
        show_default=False,
    ),
]


@contextlib.contextmanager
def _progress_bar(description: str) -> Iterator[Callable[[str], None]]:
    """A live bar on stderr counting objects by outcome; yields the tools' progress callback.
    The bar appears with the first object, so a refusal prints alone."""
    counts: Counter[str] = Counter()
    bar = Progress(
        SpinnerColumn(finished_text="✓"),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed} objects"),
        TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )
    task = bar.add_task(description, total=None, counts="")

    def advance(outcome: str) -> None:
        if not counts:
            bar.start()
        counts[outcome] += 1
        shown = ", ".join(f"{name} {count}" for name, count in sorted(counts.items()))
        bar.update(task, advance=1, counts=shown)

    try:
        yield advance
    finally:
        if counts:
            bar.update(task, total=bar.tasks[0].completed)
            bar.stop()


def _print_problems(problems: Sequence[Any], *, limit: int = 50) -> None:
    for problem in problems[:limit]:
        typer.echo(f"  {problem.kind:<20} {problem.key}  {problem.detail}", err=True)
    if len(problems) > limit:
        typer.echo(f"  … and {len(problems) - limit} more", err=True)


def reindex(
    data_dir: DataDirOption = None,
    live: Annotated[
        bool,
        typer.Option(
            "--live",
            help="Re-index a running Tessera through its query service (it keeps serving). "
            "Without it, Tessera must be stopped: the index is written directly.",
        ),
    ] = False,
    reanalyze: Annotated[
        bool,
        typer.Option(
            "--reanalyze",
            help="Parse and hash every stored .dcm again and rewrite its sidecar, instead of "
            "trusting the sidecars (for missing or corrupt ones). Tessera must be stopped.",
        ),
    ] = False,
    concurrency: Annotated[
        int, typer.Option(min=1, max=256, help="Instances handled at once.")
    ] = 16,
) -> None:
    """Rebuild the index from object storage, the system of record.

    Reads every instance's sidecar under `studies/` and indexes it again (idempotent: run it
    as often as you like). Exits 0 when every instance was indexed, 1 when some could not be
    (they are listed), 2 when refused (e.g. Tessera runs and `--live` was not given).
    """
    from tessera_common.logs import configure_logging
    from tessera_query.service import open_index
    from tessera_store.maintenance import MaintenanceRefusedError
    from tessera_store.reindex import reindex_archive

    from .cli import load_settings

    settings = load_settings(data_dir=data_dir)
    configure_logging("reindex")
    try:
        with _progress_bar("reindex") as progress:
            report = asyncio.run(
                reindex_archive(
                    settings,
                    open_index=open_index,
                    live=live,
                    reanalyze=reanalyze,
                    concurrency=concurrency,
                    progress=progress,
                )
            )
    except MaintenanceRefusedError as refused:
        typer.echo(f"tessera: {refused}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    _print_problems(report.problems)
    typer.echo(
        f"indexed {report.indexed}, skipped {report.skipped}, errors {report.errors}, "
        f"superseded copies {report.superseded}"
    )
    raise typer.Exit(0 if report.ok else 1)


def verify(
    data_dir: DataDirOption = None,
    no_index: Annotated[
        bool, typer.Option("--no-index", help="Check object storage only, not the index.")
    ] = False,
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="Objects hashed at once.")] = 8,
) -> None:
    """Check every stored object's SHA-256 and size against its sidecar and the index.

    Streams every instance object under `studies/`; reports changed bytes, missing objects
    or sidecars, and instances the index does not know or knows differently. Read-only: it
    may run while Tessera runs. Exits 0 when all is well, 1 on any problem.
    """
    from tessera_common.logs import configure_logging
    from tessera_query.service import open_index
    from tessera_store.verify import verify_archive

    from .cli import load_settings

    settings = load_settings(data_dir=data_dir)
    configure_logging("verify")
    with _progress_bar("verify") as progress:
        report = asyncio.run(
            verify_archive(
                settings,
                open_index=open_index,
                check_index=not no_index,
                concurrency=concurrency,
                progress=progress,
            )
        )
    _print_problems(report.problems)
    typer.echo(
        f"verified {report.verified}, failed {report.failed}, {decimal(report.bytes_read)} "
        f"read; index {report.index}"
    )
    raise typer.Exit(0 if report.ok else 1)


def gc(
    data_dir: DataDirOption = None,
    remove: Annotated[
        bool,
        typer.Option(
            "--remove",
            help="Also delete instance objects without a sidecar and sidecars without an "
            "object (otherwise they are only listed).",
        ),
    ] = False,
    grace: Annotated[
        float | None,
        typer.Option(
            min=1.0,
            help="Seconds an object must be old to count as orphaned; default 3600, env "
            "`TESSERA_ORPHAN_GRACE_SECONDS`. Keep it above the longest STOW request.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Collect what interrupted STOWs left in object storage.

    Deletes uploads under `incoming/` older than the grace period and lists half instances
    (an object or a sidecar alone) older than it; `--remove` deletes those too. The store
    service does the same on a timer (`TESSERA_ORPHAN_INTERVAL_SECONDS`).
    """
    from tessera_common.blobstore import open_blob_store
    from tessera_common.logs import configure_logging
    from tessera_store.orphans import collect_orphans

    from .cli import load_settings

    settings = load_settings(data_dir=data_dir, orphan_grace_seconds=grace)
    configure_logging("gc")
    with _progress_bar("gc") as progress:
        report = asyncio.run(
            collect_orphans(
                open_blob_store(settings),
                grace=timedelta(seconds=settings.orphan_grace_seconds),
                instances="remove" if remove else "report",
                progress=progress,
            )
        )
    _print_problems(report.problems)
    typer.echo(
        f"uploads deleted {report.uploads_deleted}, kept (younger) {report.uploads_kept}; "
        f"half instances {report.unpaired}, removed {report.removed}, "
        f"younger than the grace period {report.unpaired_young}"
    )
