"""``tessera upload``: store the DICOM files under some paths in any DICOMweb archive (STOW-RS).

Registered on the main app by ``tessera.cli``, with the options the ``search`` and
``download`` commands share (server URL, credentials). The HTTP client (aiohttp) is imported
by the commands themselves, so that every other ``tessera`` command starts as fast as before.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.filesize import decimal
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from tessera_common.settings import Settings

from .client_retry import RetryPolicy
from .client_stow import STORED, FileOutcome, Outcome, attribute
from .discovery import Candidate, Discovery, Skipped, discover, read_sop_instance_uid

if TYPE_CHECKING:
    from .client import DicomWebClient

PANEL = "Loading and fetching data: any DICOMweb server"
EXIT_FAILED = 1
BATCH_BYTES = 64 * 1024**2
"""A batch is closed once it holds this many bytes, whatever ``--batch`` says (a large file
still travels alone)."""
LISTED_PROBLEMS = 10


def _default_url() -> str:
    fields = Settings.model_fields
    return f"http://{fields['host'].default}:{fields['port'].default}{fields['base_path'].default}"


DEFAULT_URL = _default_url()

UrlOption = Annotated[
    str,
    typer.Option(
        "--url",
        envvar="TESSERA_URL",
        help="The DICOMweb root of the server (Tessera or any other).",
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="TESSERA_TOKEN",
        help="OIDC access token, sent as `Authorization: Bearer`.",
        show_default=False,
    ),
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="TESSERA_API_KEY",
        help="Tessera API key (`tessera apikey create`), sent as `Authorization: Bearer`.",
        show_default=False,
    ),
]
RetriesOption = Annotated[
    int,
    typer.Option(
        "--retries",
        min=0,
        max=20,
        help="Times a request is tried again after a connection error, a timeout or a "
        "408/429/5xx answer (waiting longer each time, or as long as `Retry-After` says).",
    ),
]
TimeoutOption = Annotated[
    float,
    typer.Option("--timeout", min=1, help="Seconds to wait for the server to send anything."),
]


def credential(token: str | None, api_key: str | None) -> str | None:
    """The bearer credential: the token or the API key (Tessera's gateway takes both in
    ``Authorization: Bearer``), never both."""
    token, api_key = token or None, api_key or None
    if token and api_key:
        raise typer.BadParameter("give --token or --api-key, not both")
    return token or api_key


def stderr_console() -> Console:
    return Console(stderr=True)


def stdout_console() -> Console:
    """Tables in full width even when stdout is a pipe or a CI log (rich would use 80)."""
    console = Console()
    return console if console.is_terminal else Console(width=240)


# --- batches -----------------------------------------------------------------------------------


def make_batches(
    candidates: Sequence[Candidate], max_files: int, max_bytes: int = BATCH_BYTES
) -> list[list[Candidate]]:
    """Consecutive groups of at most ``max_files`` files, each closed once it reaches
    ``max_bytes``."""
    batches: list[list[Candidate]] = []
    current: list[Candidate] = []
    size = 0
    for candidate in candidates:
        current.append(candidate)
        size += candidate.size
        if len(current) >= max_files or size >= max_bytes:
            batches.append(current)
            current, size = [], 0
    if current:
        batches.append(current)
    return batches


# --- the upload --------------------------------------------------------------------------------


@dataclass
class UploadReport:
    outcomes: list[tuple[Candidate, FileOutcome]] = field(default_factory=list)
    server_warnings: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0
    retries: int = 0
    aborted: str | None = None

    def count(self, *kinds: Outcome) -> int:
        return sum(outcome.outcome in kinds for _, outcome in self.outcomes)

    @property
    def failed(self) -> int:
        return self.count(Outcome.FAILED)

    @property
    def stored_bytes(self) -> int:
        stored = (Outcome.STORED, Outcome.WARNING)
        return sum(c.size for c, outcome in self.outcomes if outcome.outcome in stored)


async def upload_files(
    client: DicomWebClient,
    candidates: Sequence[Candidate],
    *,
    batch: int,
    concurrency: int,
    progress: Progress | None = None,
) -> UploadReport:
    """Store ``candidates`` in batches, ``concurrency`` requests at a time; a batch that fails
    fails its files, not the run, except when the server refuses the credentials."""
    from .client import AuthenticationError, DicomWebError

    report = UploadReport()
    task = None
    if progress is not None:
        total = sum(c.size for c in candidates)
        task = progress.add_task("upload", total=total, files=0, count=len(candidates))
    pending = iter(make_batches(candidates, batch))
    started = time.perf_counter()

    def advance(size: int) -> None:
        if progress is not None and task is not None:
            progress.advance(task, size)

    async def send(files: list[Candidate]) -> None:
        try:
            response = await client.store(files, advance)
        except AuthenticationError:
            raise
        except DicomWebError as error:
            outcomes = [FileOutcome(Outcome.FAILED, None, str(error))] * len(files)
        else:
            report.server_warnings.update(response.warnings)
            if response.status == 200 and response.plain_success:
                outcomes = [STORED] * len(files)
            else:
                uids = await asyncio.to_thread(
                    lambda: [read_sop_instance_uid(f.path) for f in files]
                )
                outcomes = attribute(uids, response)
        report.outcomes.extend(zip(files, outcomes, strict=True))
        if progress is not None and task is not None:
            progress.update(task, files=len(report.outcomes))

    async def worker() -> None:
        while (files := next(pending, None)) is not None:
            await send(files)

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(concurrency):
                group.create_task(worker())
    except* AuthenticationError as errors:
        report.aborted = str(errors.exceptions[0])
    report.elapsed = time.perf_counter() - started
    report.retries = client.retries
    return report


def upload_progress(console: Console) -> Progress:
    return Progress(
        SpinnerColumn(finished_text="✓"),
        TextColumn("[bold]uploading"),
        BarColumn(),
        TextColumn("{task.fields[files]}/{task.fields[count]} files"),
        DownloadColumn(binary_units=False),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


# --- the command -------------------------------------------------------------------------------


def upload(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="Files and directories (searched recursively) to upload.",
            exists=True,
            show_default=False,
        ),
    ],
    url: UrlOption = DEFAULT_URL,
    batch: Annotated[
        int, typer.Option("--batch", min=1, max=1000, help="Files per STOW-RS request.")
    ] = 10,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, max=64, help="Requests in flight at once.")
    ] = 4,
    retries: RetriesOption = 4,
    timeout: TimeoutOption = 300.0,
    token: TokenOption = None,
    api_key: ApiKeyOption = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="List every skipped and failed file.")
    ] = False,
) -> None:
    """Upload the DICOM files under PATHS with STOW-RS, to Tessera or any DICOMweb server.

    Directories are searched recursively. DICOM PS3.10 files (a 128-byte preamble, then
    `DICM`) are sent; other files are skipped and counted, including bare data sets without
    a preamble and `DICOMDIR` files. Files go in batches (`--batch`, at most 64 MB each),
    `--concurrency` requests at a time, streamed from disk; connection errors and
    408/429/5xx answers are retried with backoff (honouring `Retry-After`).

    Prints a summary: stored, stored with warnings, duplicates, failed (grouped by the
    server's Failure Reason), skipped. Exits 1 when a file failed or the server refused the
    credentials, 0 otherwise (a duplicate the archive already holds is not a failure).
    """
    from .client import DicomWebClient  # aiohttp: imported only by the commands that use it

    bearer = credential(token, api_key)
    errors = stderr_console()
    with errors.status("looking for DICOM files…"):
        found = discover(paths)
    if not found.candidates:
        print_summary(stdout_console(), found, UploadReport(), verbose=verbose)
        errors.print("no DICOM files found")
        return
    policy = RetryPolicy(attempts=retries + 1)

    def on_retry(why: str, delay: float) -> None:
        errors.print(f"[yellow]retrying in {delay:.1f} s:[/] {escape(why)}", highlight=False)

    async def run() -> UploadReport:
        async with DicomWebClient(
            url,
            token=bearer,
            retry=policy,
            timeout=timeout,
            connections=concurrency,
            on_retry=on_retry,
        ) as client:
            with upload_progress(errors) as progress:
                return await upload_files(
                    client,
                    found.candidates,
                    batch=batch,
                    concurrency=concurrency,
                    progress=progress,
                )

    report = asyncio.run(run())
    print_summary(stdout_console(), found, report, verbose=verbose)
    if report.aborted:
        errors.print(f"[red]stopped:[/] {escape(report.aborted)}", highlight=False)
    if report.aborted or report.failed:
        raise typer.Exit(EXIT_FAILED)


# --- the summary -------------------------------------------------------------------------------


def summary_rows(found: Discovery, report: UploadReport) -> list[tuple[str, int]]:
    """(label, files) rows: each outcome, its reasons indented below it."""
    rows: list[tuple[str, int]] = [("stored", report.count(Outcome.STORED))]
    for kind, label in (
        (Outcome.WARNING, "stored with warnings"),
        (Outcome.DUPLICATE, "duplicates (already stored)"),
        (Outcome.FAILED, "failed"),
    ):
        reasons = Counter(o.reason for _, o in report.outcomes if o.outcome is kind)
        rows.append((label, sum(reasons.values())))
        rows.extend((f"  {reason}", count) for reason, count in reasons.most_common())
    skipped = Counter(s.reason for s in found.skipped)
    rows.append(("skipped", len(found.skipped)))
    rows.extend((f"  {reason}", count) for reason, count in skipped.most_common())
    not_sent = len(found.candidates) - len(report.outcomes)
    if not_sent:
        rows.append(("not sent", not_sent))
    return rows


def print_summary(
    console: Console, found: Discovery, report: UploadReport, *, verbose: bool
) -> None:
    table = Table(title="Upload summary", title_justify="left")
    table.add_column("outcome")
    table.add_column("files", justify="right")
    for label, count in summary_rows(found, report):
        style = "dim" if label.startswith("  ") else None
        table.add_row(Text(label), str(count), style=style)
    console.print(table)
    problems = [(c.path, o) for c, o in report.outcomes if o.outcome is not Outcome.STORED]
    limit = None if verbose else LISTED_PROBLEMS
    for path, outcome in problems[:limit]:
        detail = f" — {outcome.detail}" if outcome.detail and outcome.code is not None else ""
        console.print(
            f"{outcome.outcome.value}: {path}: {outcome.reason}{detail}",
            markup=False,
            highlight=False,
        )
    if limit is not None and len(problems) > limit:
        console.print(f"… and {len(problems) - limit} more (--verbose lists them all)")
    if verbose:
        for skipped in found.skipped:
            _print_skipped(console, skipped)
    for text, count in report.server_warnings.most_common(LISTED_PROBLEMS):
        if not text.startswith("part "):
            console.print(f"server warning ({count} times): {text}", markup=False, highlight=False)
    if report.outcomes:
        console.print(_rate_line(report), highlight=False)


def _print_skipped(console: Console, skipped: Skipped) -> None:
    console.print(f"skipped: {skipped.path}: {skipped.reason}", markup=False, highlight=False)


def _rate_line(report: UploadReport) -> str:
    seconds = max(report.elapsed, 1e-6)
    stored = report.count(Outcome.STORED, Outcome.WARNING)
    line = (
        f"{stored} of {len(report.outcomes)} files stored ({decimal(report.stored_bytes)}) in "
        f"{report.elapsed:.1f} s: {stored / seconds:.1f} files/s, "
        f"{report.stored_bytes / 1e6 / seconds:.1f} MB/s"
    )
    if report.retries:
        line += f"; {report.retries} {'retry' if report.retries == 1 else 'retries'}"
    return line
