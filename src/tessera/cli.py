"""The ``tessera`` command: embedded mode (``serve``) and one command per service.

Settings are built once here, from ``TESSERA_*`` environment variables plus command-line
overrides, and passed down; nothing below reads the environment by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Mapping
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from pydantic import ValidationError

from tessera_common.logs import configure_logging
from tessera_common.settings import Settings

from . import maintenance_cli, search_cli, upload_cli
from .apikey_cli import apikey_app

log = logging.getLogger("tessera")

ServiceRun = Callable[[Settings], Awaitable[None]]

SERVICE_MODULES: Mapping[str, str] = {
    "gateway": "tessera_gateway.service",
    "store": "tessera_store.service",
    "query": "tessera_query.service",
    "codec": "tessera_codec.service",
    "render": "tessera_render.service",
}
"""Each module exposes ``async def run(settings: Settings) -> None`` serving until cancelled."""

SUPERVISOR_PID_VARIABLE = "TESSERA_SUPERVISOR_PID"
"""Set by ``tessera serve`` for its children: a child whose supervisor died stops itself."""

EXIT_USAGE = 2

ORPHAN_STOP_DEADLINE = 10.0
"""Seconds a service whose supervisor died may spend cleaning up before it exits anyway."""

app = typer.Typer(
    name="tessera",
    help=(
        "Tessera: a DICOMweb archive (DICOM PS3.18: STOW-RS, QIDO-RS, WADO-RS) built from "
        "small services that talk over NATS.\n\n"
        "Start with **tessera serve**: it runs everything on this machine. The **gateway**, "
        "**store**, **query**, **codec** and **render** commands run one service alone, for "
        "distributed deployments."
        "\n\n"
        "Every setting can also be given as an environment variable named "
        "`TESSERA_<SETTING>`, e.g. `TESSERA_PORT=8042` or `TESSERA_NATS_URL=nats://nats:4222`; "
        "`TESSERA_LOG_LEVEL=DEBUG` makes the logs verbose."
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold credentials (TESSERA_S3_SECRET_…)
    context_settings={"help_option_names": ["-h", "--help"]},
)

EMBEDDED = "Embedded mode"
DISTRIBUTED = "Distributed mode: one service per process"


def load_settings(**overrides: Any) -> Settings:
    """``Settings`` from the environment, with the options given on the command line on top."""
    given = {name: value for name, value in overrides.items() if value is not None}
    try:
        return Settings(**given)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or 'settings'}: {item['msg']}"
            for item in error.errors()
        )
        typer.echo(f"tessera: invalid configuration — {problems}", err=True)
        raise typer.Exit(EXIT_USAGE) from None


@app.command(rich_help_panel=EMBEDDED)
def serve(
    host: Annotated[
        str | None,
        typer.Option(
            help="Address the HTTP server listens on; default `127.0.0.1`, env `TESSERA_HOST`. "
            "Keep the default unless other machines must reach this archive: there is no "
            "authentication yet.",
            show_default=False,
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            help="HTTP port; default `8080`, env `TESSERA_PORT`.",
            show_default=False,
            min=1,
            max=65535,
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Directory for everything Tessera keeps: DICOM objects, the SQLite index, "
            "NATS JetStream state, logs. Created if missing; default `./tessera-data`, "
            "env `TESSERA_DATA_DIR`.",
            show_default=False,
        ),
    ] = None,
    base_path: Annotated[
        str | None,
        typer.Option(
            "--base-path",
            help="URL path of the DICOMweb root; default `/dicom-web`, env `TESSERA_BASE_PATH`.",
            show_default=False,
        ),
    ] = None,
    render_workers: Annotated[
        int | None,
        typer.Option(
            "--render-workers",
            help="Render processes to start (rendered and thumbnail images); default: one per "
            "CPU up to 4, env `TESSERA_RENDER_WORKERS`.",
            show_default=False,
            min=1,
            max=32,
        ),
    ] = None,
    gateway_workers: Annotated[
        int | None,
        typer.Option(
            "--gateway-workers",
            help="Gateway (HTTP) processes to start, sharing the port; default: one per CPU "
            "up to 4, env `TESSERA_GATEWAY_WORKERS`.",
            show_default=False,
            min=1,
            max=32,
        ),
    ] = None,
) -> None:
    """Run the whole archive on this machine, with no other infrastructure.

    Starts a private NATS server (with JetStream, inside the data directory), then the query,
    store, codec, render and gateway services as child processes, and restarts a service that
    crashes. Prints the DICOMweb URL once it answers; Ctrl-C stops everything cleanly.

    Other settings (e.g. `TESSERA_PUBLIC_URL`, `TESSERA_MAX_PART_BYTES`) are read from the
    environment and handed on to the services. Their logs go to this terminal; the NATS
    server's to `<data-dir>/logs/nats-server.log`.
    """
    settings = load_settings(
        host=host,
        port=port,
        data_dir=data_dir,
        base_path=base_path,
        render_workers=render_workers,
        gateway_workers=gateway_workers,
    )
    configure_logging("serve")
    from tessera.supervisor import serve as run_embedded

    raise typer.Exit(asyncio.run(run_embedded(settings)))


@app.command(rich_help_panel=DISTRIBUTED)
def gateway() -> None:
    """Run the HTTP gateway alone: DICOMweb requests in, NATS requests out.

    Configured by environment variables:

    * `TESSERA_NATS_URL`: the NATS server, e.g. `nats://nats:4222`
    * `TESSERA_HOST`, `TESSERA_PORT`: where to listen (default `127.0.0.1:8080`)
    * `TESSERA_BASE_PATH`: the DICOMweb root path (default `/dicom-web`)
    * `TESSERA_PUBLIC_URL`: the URL clients use, when behind a proxy
    * `TESSERA_BLOB_BACKEND` and `TESSERA_S3_*` or `TESSERA_BLOB_ROOT`: object storage
    * `TESSERA_MAX_PART_BYTES`, `TESSERA_MAX_PARTS`: STOW-RS limits

    Stops cleanly on SIGTERM or Ctrl-C.
    """
    _run_service("gateway")


@app.command(rich_help_panel=DISTRIBUTED)
def store() -> None:
    """Run the store service alone: it ingests (and deletes) DICOM instances.

    Configured by environment variables:

    * `TESSERA_NATS_URL`: the NATS server (with JetStream), e.g. `nats://nats:4222`
    * `TESSERA_BLOB_BACKEND`: `s3` (MinIO or any S3) or `local`
    * for S3: `TESSERA_S3_ENDPOINT`, `TESSERA_S3_BUCKET`, `TESSERA_S3_REGION`,
      `TESSERA_S3_ACCESS_KEY_ID`, `TESSERA_S3_SECRET_ACCESS_KEY`, `TESSERA_S3_ALLOW_HTTP`
    * for a local directory: `TESSERA_BLOB_ROOT`

    Run several copies to share the work. Stops cleanly on SIGTERM or Ctrl-C.
    """
    _run_service("store")


@app.command(rich_help_panel=DISTRIBUTED)
def query() -> None:
    """Run the query service alone: the index behind QIDO-RS, retrieval and metadata.

    Configured by environment variables:

    * `TESSERA_NATS_URL`: the NATS server (with JetStream), e.g. `nats://nats:4222`
    * `TESSERA_INDEX_BACKEND`: `mongodb` or `sqlite`
    * for MongoDB: `TESSERA_MONGODB_URI`, `TESSERA_MONGODB_DATABASE`
    * for SQLite: `TESSERA_SQLITE_PATH`

    Run several copies to share the work. Stops cleanly on SIGTERM or Ctrl-C.
    """
    _run_service("query")


@app.command(rich_help_panel=DISTRIBUTED)
def codec() -> None:
    """Run the codec service alone: it transcodes instances and frames between transfer
    syntaxes for WADO-RS, in worker processes, and caches the results in object storage.

    Configured by environment variables:

    * `TESSERA_NATS_URL`: the NATS server, e.g. `nats://nats:4222`
    * `TESSERA_BLOB_BACKEND` and `TESSERA_S3_*` or `TESSERA_BLOB_ROOT`: object storage
    * `TESSERA_CODEC_WORKERS`: worker processes (default: one per CPU, up to 4)

    Run several copies to share the work. Stops cleanly on SIGTERM or Ctrl-C.
    """
    _run_service("codec")


@app.command(rich_help_panel=DISTRIBUTED)
def render() -> None:
    """Run the render service alone: it renders instances and frames as JPEG, PNG or GIF for
    the rendered and thumbnail resources, and caches the images in object storage.

    Configured by environment variables:

    * `TESSERA_NATS_URL`: the NATS server, e.g. `nats://nats:4222`
    * `TESSERA_BLOB_BACKEND` and `TESSERA_S3_*` or `TESSERA_BLOB_ROOT`: object storage
    * `TESSERA_RENDER_THREADS`: threads rendering at once in this process (default 1)

    Run several copies to share the work (they form one NATS queue group). Stops cleanly on
    SIGTERM or Ctrl-C.
    """
    _run_service("render")


@app.command()
def version() -> None:
    """Print the versions of Tessera, Python and the bundled nats-server."""
    typer.echo(f"tessera {_distribution_version('tessera')}")
    typer.echo(f"python {sys.version.split()[0]}")
    typer.echo(f"nats-server {_nats_server_version()}")


app.add_typer(apikey_app, name="apikey", rich_help_panel="Administration")
for _command in (maintenance_cli.reindex, maintenance_cli.verify, maintenance_cli.gc):
    app.command(rich_help_panel=maintenance_cli.MAINTENANCE)(_command)
for _transfer in (upload_cli.upload, search_cli.search, search_cli.download):
    app.command(rich_help_panel=upload_cli.PANEL)(_transfer)


def main() -> None:
    """Entry point of the ``tessera`` console script and of ``python -m tessera``."""
    app(prog_name="tessera")


# --- running one service -------------------------------------------------------------------


def _run_service(name: str) -> None:
    settings = load_settings()
    configure_logging(name)
    module = SERVICE_MODULES[name]
    try:
        run = load_service(name)
    except ModuleNotFoundError as error:
        if error.name in (module, module.partition(".")[0]):
            log.error("the %s service is not installed (no module %s)", name, error.name)
        else:
            log.exception("cannot load the %s service", name)
        raise typer.Exit(1) from None
    except Exception:
        log.exception("cannot load the %s service", name)
        raise typer.Exit(1) from None
    supervisor_pid = _supervisor_pid()
    tune_garbage_collector()
    raise typer.Exit(asyncio.run(run_until_signalled(name, run, settings, supervisor_pid)))


#: Young-generation threshold for long-running services (CPython's default is 700).
GC_GEN0_THRESHOLD = 20_000


def tune_garbage_collector() -> None:
    """Fewer, cheaper collections for a long-running service.

    Everything imported so far (pydicom's dictionaries, pydantic models, …) lives as long as the
    process: ``gc.freeze`` moves it out of the collector's sight, so full collections no longer
    walk it (they caused 50-60 ms pauses in QIDO p95), and a larger young generation makes
    collections rarer. Reference counting still frees ordinary garbage immediately.
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def load_service(name: str) -> ServiceRun:
    module = importlib.import_module(SERVICE_MODULES[name])
    return cast(ServiceRun, module.run)


def _supervisor_pid() -> int | None:
    value = os.environ.get(SUPERVISOR_PID_VARIABLE)
    return int(value) if value and value.isdigit() else None


async def run_until_signalled(
    name: str, run: ServiceRun, settings: Settings, supervisor_pid: int | None = None
) -> int:
    """Serve until SIGTERM/SIGINT (or the supervisor's death): cancel, clean up, exit 0.

    An unexpected exception is logged and gives exit code 1, so that a supervisor or an
    orchestrator restarts the service.
    """
    loop = asyncio.get_running_loop()
    service = asyncio.create_task(_as_coroutine(run(settings)), name=name)
    stop_requested = False
    deadline: asyncio.TimerHandle | None = None

    def request_stop() -> None:
        nonlocal stop_requested
        if stop_requested:
            exit_now(name, "was asked to stop twice")
            return
        stop_requested = True
        service.cancel()

    def supervisor_gone() -> None:
        # Nobody is left to SIGKILL us if the clean-up hangs: give ourselves a deadline.
        nonlocal deadline
        request_stop()
        deadline = loop.call_later(
            ORPHAN_STOP_DEADLINE, exit_now, name, f"did not stop within {ORPHAN_STOP_DEADLINE} s"
        )

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, request_stop)
    unwatch = (
        _watch_supervisor(supervisor_pid, supervisor_gone) if supervisor_pid is not None else None
    )
    try:
        await service
    except asyncio.CancelledError:
        if not stop_requested:
            raise
        log.info("%s stopped", name)
        return 0
    except Exception:
        log.exception("%s failed", name)
        return 1
    finally:
        if deadline is not None:
            deadline.cancel()
        if unwatch is not None:
            unwatch()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    log.warning("%s returned without being asked to stop", name)
    return 0


def exit_now(name: str, reason: str) -> None:
    """Leave at once, without clean-up (a second Ctrl-C, or a hung stop with no supervisor)."""
    log.error("%s %s; exiting without cleaning up", name, reason)
    logging.shutdown()
    os._exit(1)


async def _as_coroutine(awaitable: Awaitable[None]) -> None:
    await awaitable


def _watch_supervisor(supervisor_pid: int, request_stop: Callable[[], None]) -> Callable[[], None]:
    """Stop when the supervisor dies, even by SIGKILL (it then cannot stop its children).

    Linux only (a pidfd becomes readable when its process exits); elsewhere nothing is
    watched. Returns the function that ends the watch.
    """
    loop = asyncio.get_running_loop()
    if os.getppid() != supervisor_pid:  # it died before we got here: we were re-parented
        loop.call_soon(request_stop)
        return lambda: None
    if sys.platform != "linux":
        return lambda: None
    try:
        descriptor = os.pidfd_open(supervisor_pid)
    except ProcessLookupError:
        loop.call_soon(request_stop)
        return lambda: None
    except OSError:  # a kernel without pidfds: do without the watch
        return lambda: None

    def supervisor_gone() -> None:
        loop.remove_reader(descriptor)
        log.warning("supervisor (pid %d) is gone; stopping", supervisor_pid)
        request_stop()

    def unwatch() -> None:
        loop.remove_reader(descriptor)
        os.close(descriptor)

    loop.add_reader(descriptor, supervisor_gone)
    return unwatch


# --- version -------------------------------------------------------------------------------


def _distribution_version(name: str) -> str:
    try:
        return package_version(name)
    except PackageNotFoundError:
        return "(not installed)"


def _nats_server_version() -> str:
    from tessera.natsd import NatsServerError, nats_server_binary

    try:
        binary = nats_server_binary()
    except NatsServerError:
        return "(not found)"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        completed = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=10, check=False
        )
        return completed.stdout.strip().removeprefix("nats-server: ") or "(unknown)"
    return "(unknown)"
