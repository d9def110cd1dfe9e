"""Tessera benchmark suite: ``python -m bench --help`` (or ``./run bench --help``)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import requests
import typer
from rich.console import Console
from rich.table import Table

from bench.ingest import stow_ingest
from bench.rss import PeakRss
from bench.synthetic import ct_series

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)
console = Console()


@app.callback()
def main() -> None:
    """Benchmarks against any DICOMweb server (default: an embedded Tessera started here)."""


def _wait_ready(base: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("tessera serve exited during start-up")
        try:
            if requests.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise TimeoutError("tessera did not become ready")


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
    """STOW synthetic 512x512 CT instances; report instances/s, MB/s and, for an embedded
    Tessera started here, the peak RSS of every process."""
    instances = list(ct_series(count, seed=seed, rows=rows, columns=rows))
    process: subprocess.Popen[bytes] | None = None
    peaks: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="tessera-bench-") as scratch:
        if url is None:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tessera",
                    "serve",
                    "--port",
                    str(port),
                    "--data-dir",
                    str(Path(scratch) / "data"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            _wait_ready(f"http://127.0.0.1:{port}", process)
            root = f"http://127.0.0.1:{port}/dicom-web"
        else:
            root = url.rstrip("/")
        try:
            if process is not None:
                with PeakRss(process.pid) as rss:
                    result = stow_ingest(root, instances, clients=clients, batch=batch)
                peaks = rss.peaks
            else:
                result = stow_ingest(root, instances, clients=clients, batch=batch)
        finally:
            if process is not None:
                process.terminate()
                process.wait(timeout=60)
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


if __name__ == "__main__":
    app()
