"""STOW and frames throughput of distributed mode (every service its own process, S3 on
SeaweedFS), to read beside embedded mode's ``./run bench ingest`` and ``./run bench run``.

    .venv/bin/python -m tests.support.bench_distributed --count 200 --clients 1 --clients 4
    .venv/bin/python -m tests.support.bench_distributed --frames        # adds frames_native

Each measurement gets a fresh tier (as ``bench ingest`` starts a fresh embedded Tessera), with
tracing off as in embedded mode. STOW: ``bench.ingest.stow_ingest`` with synthetic 512x512 CT
in batches; frames: the bench's ``frames_native`` scenario (``--size small``) pointed at the
tier's gateway. Prints one JSON object per measurement. No figure is asserted anywhere: this
machine's load decides too much.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support.distributed import running_distributed

from bench.ingest import stow_ingest
from bench.synthetic import ct_series


def measure_ingest(count: int, rows: int, clients: int, batch: int) -> dict[str, object]:
    instances = list(ct_series(count, seed=0, rows=rows, columns=rows))
    with (
        tempfile.TemporaryDirectory(prefix="tessera-dist-bench-") as scratch,
        running_distributed(Path(scratch)) as tier,
    ):
        result = stow_ingest(tier.root, instances, clients=clients, batch=batch)
        per_store = {
            s.name: s.sample(
                "tessera_bus_handler_duration_seconds_count",
                {"subject": "tessera.v1.store.ingest", "outcome": "ok"},
            )
            for s in tier.replicas("store")
        }
    return {
        "mode": "distributed-s3",
        "scenario": "ingest",
        "count": count,
        "rows": rows,
        "clients": clients,
        "batch": batch,
        "instances_per_second": round(result.instances_per_second, 1),
        "megabytes_per_second": round(result.megabytes_per_second, 1),
        "seconds": round(result.seconds, 2),
        "ingests_per_store": per_store,
        "load_average": os.getloadavg(),
    }


def measure_frames(size: str) -> dict[str, object]:
    with (
        tempfile.TemporaryDirectory(prefix="tessera-dist-bench-") as scratch,
        running_distributed(Path(scratch)) as tier,
    ):
        output = Path(scratch) / "frames.json"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "bench",
                "run",
                "--url",
                tier.root,
                "--label",
                "distributed-s3",
                "--size",
                size,
                "--scenario",
                "frames_native",
                "--output",
                str(output),
            ],
            check=True,
        )
        return {"mode": "distributed-s3", "scenario": "frames_native", "bench": _load(output)}


def _load(path: Path) -> object:
    return json.loads(path.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--clients", type=int, action="append")
    parser.add_argument("--frames", action="store_true", help="also run frames_native")
    parser.add_argument("--size", default="small", help="bench size for frames")
    args = parser.parse_args()
    for clients in args.clients or [1, 4]:
        print(json.dumps(measure_ingest(args.count, args.rows, clients, args.batch)), flush=True)
    if args.frames:
        print(json.dumps(measure_frames(args.size)), flush=True)


if __name__ == "__main__":
    main()
