"""``tessera search`` (QIDO-RS) and ``tessera download`` (WADO-RS), against any DICOMweb server.

Registered on the main app by ``tessera.cli``.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any

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
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from tessera_common.uid import is_valid_uid

from .client_multipart import MultipartError, PartData, PartEnd, PartStart
from .client_retry import RetryPolicy
from .discovery import read_sop_instance_uid
from .upload_cli import (
    DEFAULT_URL,
    EXIT_FAILED,
    ApiKeyOption,
    RetriesOption,
    TimeoutOption,
    TokenOption,
    UrlOption,
    credential,
    stderr_console,
    stdout_console,
)

if TYPE_CHECKING:
    from .client import DicomWebClient, Level

COLUMNS: Mapping[str, Sequence[tuple[str, str]]] = {
    "studies": (
        ("StudyInstanceUID", "0020000D"),
        ("PatientID", "00100020"),
        ("PatientName", "00100010"),
        ("StudyDate", "00080020"),
        ("Modalities", "00080061"),
        ("StudyDescription", "00081030"),
        ("Series", "00201206"),
        ("Instances", "00201208"),
    ),
    "series": (
        ("StudyInstanceUID", "0020000D"),
        ("SeriesInstanceUID", "0020000E"),
        ("Modality", "00080060"),
        ("SeriesNumber", "00200011"),
        ("SeriesDescription", "0008103E"),
        ("Instances", "00201209"),
    ),
    "instances": (
        ("SeriesInstanceUID", "0020000E"),
        ("SOPInstanceUID", "00080018"),
        ("SOPClassUID", "00080016"),
        ("InstanceNumber", "00200013"),
    ),
}
"""Table columns per level: attributes every QIDO-RS server returns by default (PS3.18
§10.6.3.3, Tables 10.6.3-3 to -5), as (heading, tag)."""


class SearchLevel(StrEnum):
    studies = "studies"
    series = "series"
    instances = "instances"


class OutputFormat(StrEnum):
    table = "table"
    json = "json"


def parse_query(pairs: Sequence[str]) -> list[tuple[str, str]]:
    """``KEY=VALUE`` arguments as query parameters, in order; the server validates keys
    (attribute keywords or tags, ``includefield``, ``fuzzymatching``, …)."""
    parsed = []
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key.strip():
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="-q")
        parsed.append((key.strip(), value))
    return parsed


def display_value(attribute: Any) -> str:
    """One cell: a DICOM JSON attribute's values (PS3.18 §F.2) joined by backslashes, a
    Person Name by its alphabetic form, a sequence as its item count."""
    if not isinstance(attribute, Mapping):
        return ""
    values = attribute.get("Value")
    if not isinstance(values, list):
        return ""
    if attribute.get("vr") == "SQ":
        return f"{len(values)} items"
    shown = []
    for value in values:
        if isinstance(value, Mapping):
            value = value.get("Alphabetic", "")
        shown.append("" if value is None else str(value))
    return "\\".join(shown)


def check_uid(value: str | None, what: str) -> str | None:
    """``value`` when a usable UID (PS3.5 §9.1); it ends up in a URL and a file name."""
    if value is not None and not is_valid_uid(value):
        raise typer.BadParameter(f"{value[:80]!r} is not a valid DICOM UID", param_hint=what)
    return value


# --- search ------------------------------------------------------------------------------------


def search(
    level: Annotated[SearchLevel, typer.Argument(help="What to search for.")] = SearchLevel.studies,
    query: Annotated[
        list[str] | None,
        typer.Option(
            "--query",
            "-q",
            help="A matching key as `KEY=VALUE` (e.g. `PatientID=P1`, `StudyDate=20200101-`, "
            "`includefield=all`); repeat for several.",
            show_default=False,
        ),
    ] = None,
    study: Annotated[
        str | None, typer.Option("--study", help="Search within this study.", show_default=False)
    ] = None,
    series: Annotated[
        str | None,
        typer.Option(
            "--series", help="Search within this series (needs --study).", show_default=False
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Most results.", show_default=False)
    ] = None,
    offset: Annotated[int, typer.Option("--offset", min=0, help="Results to skip.")] = 0,
    output: Annotated[
        OutputFormat, typer.Option("--format", help="A table, or the DICOM JSON as returned.")
    ] = OutputFormat.table,
    url: UrlOption = DEFAULT_URL,
    retries: RetriesOption = 4,
    timeout: TimeoutOption = 300.0,
    token: TokenOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Search the archive with QIDO-RS: studies (default), series or instances.

    Examples: `tessera search -q PatientID=P1`,
    `tessera search series --study 1.2.3 --format json`.
    """
    from .client import DicomWebClient, DicomWebError

    if series is not None and study is None:
        raise typer.BadParameter(
            "a series is searched within a study: give --study", param_hint="--series"
        )
    check_uid(study, "--study")
    check_uid(series, "--series")
    params = parse_query(query or [])
    if limit is not None:
        params.append(("limit", str(limit)))
    if offset:
        params.append(("offset", str(offset)))
    bearer = credential(token, api_key)

    async def run() -> tuple[list[dict[str, Any]], tuple[str, ...]]:
        async with DicomWebClient(
            url, token=bearer, retry=RetryPolicy(attempts=retries + 1), timeout=timeout
        ) as client:
            return await client.search(level.value, params, study=study, series=series)

    errors = stderr_console()
    try:
        matches, warnings = asyncio.run(run())
    except DicomWebError as error:
        errors.print(f"[red]search failed:[/] {escape(str(error))}", highlight=False)
        raise typer.Exit(EXIT_FAILED) from None
    for warning in warnings:
        errors.print(f"server warning: {warning}", markup=False, highlight=False)
    if output is OutputFormat.json:
        typer.echo(json.dumps(matches, indent=2))
        return
    stdout_console().print(results_table(level.value, matches))
    errors.print(f"{len(matches)} {level.value if len(matches) != 1 else _singular(level.value)}")


def results_table(level: Level, matches: Sequence[Mapping[str, Any]]) -> Table:
    table = Table()
    for heading, _ in COLUMNS[level]:
        table.add_column(heading, overflow="fold")
    for match in matches:
        table.add_row(*(Text(display_value(match.get(tag))) for _, tag in COLUMNS[level]))
    return table


def _singular(level: str) -> str:
    return {"studies": "study", "series": "series", "instances": "instance"}[level]


# --- download ----------------------------------------------------------------------------------


@dataclass
class DownloadReport:
    written: list[Path]
    skipped: int = 0


async def save_parts(
    client: DicomWebClient,
    out: Path,
    study: str,
    series: str | None,
    instance: str | None,
    *,
    transfer_syntax: str,
    on_bytes: Callable[[int], None],
    on_file: Callable[[Path], None],
) -> None:
    """Stream one WADO-RS answer into ``out``: each part into a temporary file, renamed to
    ``<SOP Instance UID>.dcm`` (read from its meta information) once complete."""
    file: IO[bytes] | None = None
    temporary = out / f".tessera-download-{os.getpid()}.part"
    parts = 0
    try:
        async for event in client.retrieve(
            study, series, instance, transfer_syntax=transfer_syntax
        ):
            if isinstance(event, PartStart):
                file = await asyncio.to_thread(temporary.open, "wb")
            elif isinstance(event, PartData) and file is not None:
                await asyncio.to_thread(file.write, event.data)
                on_bytes(len(event.data))
            elif isinstance(event, PartEnd) and file is not None:
                await asyncio.to_thread(file.close)
                file = None
                parts += 1
                on_file(await asyncio.to_thread(_file_by_uid, temporary, out, parts))
    finally:
        if file is not None:
            await asyncio.to_thread(file.close)
        temporary.unlink(missing_ok=True)


def _file_by_uid(temporary: Path, out: Path, number: int) -> Path:
    uid = read_sop_instance_uid(temporary)
    name = f"{uid}.dcm" if uid is not None and is_valid_uid(uid) else f"part-{number}.dcm"
    target = out / name
    temporary.replace(target)
    return target


async def missing_instances(
    client: DicomWebClient, out: Path, study: str, series: str | None
) -> tuple[list[tuple[str, str]], int]:
    """(series, instance) UIDs in scope without a file in ``out``, and how many have one."""
    found, _ = await client.search("instances", study=study, series=series)
    missing: list[tuple[str, str]] = []
    present = 0
    for match in found:
        series_uid = display_value(match.get("0020000E")) or series or ""
        sop_uid = display_value(match.get("00080018"))
        if not (is_valid_uid(series_uid) and is_valid_uid(sop_uid)):
            continue
        if (out / f"{sop_uid}.dcm").exists():
            present += 1
        else:
            missing.append((series_uid, sop_uid))
    return missing, present


def download_progress(console: Console) -> Progress:
    return Progress(
        SpinnerColumn(finished_text="✓"),
        TextColumn("[bold]downloading"),
        BarColumn(),
        TextColumn("{task.fields[files]} written"),
        DownloadColumn(binary_units=False),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def download(
    study: Annotated[str, typer.Argument(help="Study Instance UID.", show_default=False)],
    series: Annotated[
        str | None, typer.Argument(help="Series Instance UID.", show_default=False)
    ] = None,
    instance: Annotated[
        str | None, typer.Argument(help="SOP Instance UID.", show_default=False)
    ] = None,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Directory for the files; created if missing, default: the current one.",
            show_default=False,
        ),
    ] = Path(),
    skip_existing: Annotated[
        bool,
        typer.Option(
            "--skip-existing",
            help="Only fetch instances without a file in --out yet (lists them with QIDO-RS "
            "first, then retrieves them one by one): resumes an interrupted download.",
        ),
    ] = False,
    transfer_syntax: Annotated[
        str,
        typer.Option(
            "--transfer-syntax",
            help="Transfer syntax UID to ask for; `*` means as stored (byte-exact).",
        ),
    ] = "*",
    url: UrlOption = DEFAULT_URL,
    retries: RetriesOption = 4,
    timeout: TimeoutOption = 300.0,
    token: TokenOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Download a study, series or instance with WADO-RS, as DICOM PS3.10 files.

    Each instance is streamed to `<SOP Instance UID>.dcm` in `--out`; by default the bytes
    are exactly those stored (`transfer-syntax=*`).
    """
    from .client import DicomWebClient, DicomWebError

    check_uid(study, "STUDY_UID")
    check_uid(series, "SERIES_UID")
    check_uid(instance, "SOP_UID")
    if transfer_syntax != "*":
        check_uid(transfer_syntax, "--transfer-syntax")
    bearer = credential(token, api_key)
    out.mkdir(parents=True, exist_ok=True)
    errors = stderr_console()
    report = DownloadReport(written=[])

    async def run() -> None:
        async with DicomWebClient(
            url, token=bearer, retry=RetryPolicy(attempts=retries + 1), timeout=timeout
        ) as client:
            with download_progress(errors) as progress:
                task = progress.add_task("download", total=None, files=0)

                def on_file(path: Path) -> None:
                    report.written.append(path)
                    progress.update(task, files=len(report.written))

                def fetch(series_uid: str | None, sop_uid: str | None) -> Awaitable[None]:
                    return save_parts(
                        client,
                        out,
                        study,
                        series_uid,
                        sop_uid,
                        transfer_syntax=transfer_syntax,
                        on_bytes=lambda size: progress.advance(task, size),
                        on_file=on_file,
                    )

                if not skip_existing:
                    await fetch(series, instance)
                elif instance is not None:
                    if (out / f"{instance}.dcm").exists():
                        report.skipped = 1
                    else:
                        await fetch(series, instance)
                else:
                    missing, report.skipped = await missing_instances(client, out, study, series)
                    for series_uid, sop_uid in missing:
                        await fetch(series_uid, sop_uid)
                progress.update(task, total=progress.tasks[0].completed)

    try:
        asyncio.run(run())
    except (DicomWebError, MultipartError) as error:
        errors.print(
            f"[red]download failed:[/] {escape(str(error))} ({len(report.written)} files written)",
            highlight=False,
        )
        raise typer.Exit(EXIT_FAILED) from None
    total = sum(path.stat().st_size for path in report.written)
    count = len(report.written)
    line = f"{count} file{'' if count == 1 else 's'} ({decimal(total)}) written to {out}"
    if report.skipped:
        line += f"; {report.skipped} already there"
    stdout_console().print(line, markup=False, highlight=False)
