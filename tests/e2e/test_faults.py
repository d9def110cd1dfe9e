"""Fault injection in distributed mode (ARCHITECTURE invariants 1, 2, 3 and 8).

Every service its own process (``tests.support.distributed``: NATS, SeaweedFS S3, query,
store x2, codec, gateway). While writer threads STOW small synthetic instances and a reader
retrieves acknowledged ones (``tests.support.faults``), one fault at a time: ``kill -9``
of the gateway, of each store, of the query service and of the codec (each restarted by the
harness, as a supervisor or Kubernetes would), a NATS restart on the same port and JetStream
directory, and object storage frozen (SIGSTOP) for a few seconds. After each fault a probe
round trip (STOW, WADO-RS as stored and transcoded) measures the recovery.

Afterwards: every acknowledged instance is found by QIDO-RS and retrieved byte-exact; every
visible instance is exactly the bytes some client sent under its UID (an instance whose STOW
answer was lost may be stored, but never in part); no read during the faults returned other
bytes than those acknowledged. 5xx responses and connection errors during the faults are
counted, not forbidden: clients retry them. A summary table is printed and written as JSON
(``docs/DURABILITY.md``, "Fault-injection suite").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from tests.support.distributed import DistributedTessera, running_distributed, wait_ready
from tests.support.faults import (
    Ledger,
    Load,
    audit,
    run_verify,
    summary_table,
    to_json,
    wait_recovered,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

WARM_UP = 4.0
"""Seconds of load before the first fault."""
STEADY = 3.0
"""Seconds of load after a fault's recovery before the next fault."""
SUPERVISOR_DELAY = 1.0
"""Seconds between a kill and the restart (a supervisor's back-off, a pod's reschedule)."""
NATS_DOWN = 2.0
S3_PAUSED = 5.0
SERVICE_ENV = {
    # A bus request to a killed service fails after this long (default 60 s) and is retried.
    "TESSERA_REQUEST_TIMEOUT": "10",
}


@dataclass(frozen=True)
class Fault:
    name: str
    held: float
    """Seconds the fault lasts before the harness repairs it."""
    inject: Callable[[DistributedTessera], None]
    restarted: str | None = None
    """The service the harness restarted (its readiness is timed too)."""


def _kill(name: str) -> Fault:
    def inject(tier: DistributedTessera) -> None:
        tier.kill(name)
        time.sleep(SUPERVISOR_DELAY)
        tier.restart(name, wait=False)

    return Fault(f"kill -9 {name}", SUPERVISOR_DELAY, inject, restarted=name)


def _restart_nats(tier: DistributedTessera) -> None:
    tier.nats.process.kill()
    tier.nats.process.wait()
    time.sleep(NATS_DOWN)
    tier.restart_nats()


def _pause_s3(tier: DistributedTessera) -> None:
    with tier.s3_paused():
        time.sleep(S3_PAUSED)


def faults(tier: DistributedTessera) -> list[Fault]:
    killed = ["gateway", *(s.name for s in tier.replicas("store")), "query"]
    if "codec" in tier.services:
        killed.append("codec")
    return [
        *(_kill(name) for name in killed),
        Fault("restart NATS", NATS_DOWN, _restart_nats),
        Fault("S3 frozen (SIGSTOP)", S3_PAUSED, _pause_s3),
    ]


@pytest.fixture(scope="module")
def tier(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DistributedTessera]:
    directory = tmp_path_factory.mktemp("faults")
    with running_distributed(directory, renders=0, env=SERVICE_ENV) as running:
        yield running


def test_no_acknowledged_instance_is_lost_under_faults(
    tier: DistributedTessera,
    tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    started = time.monotonic()
    ledger = Ledger()
    load = Load(tier.root, ledger)
    rows: list[dict[str, object]] = []
    windows: list[tuple[float, float]] = []
    load.start()
    try:
        time.sleep(WARM_UP)
        first_fault = time.monotonic()
        for fault in faults(tier):
            start = time.monotonic()
            fault.inject(tier)
            recovered = wait_recovered(tier.root, ledger, load.seeds, since=start)
            ready = None
            if fault.restarted is not None:
                wait_ready(tier, names=[fault.restarted])
                ready = time.monotonic() - start
            time.sleep(STEADY)
            windows.append((start, time.monotonic()))
            rows.append(
                {
                    "fault": fault.name,
                    "held_s": round(fault.held, 1),
                    "restarted_ready_s": "" if ready is None else round(ready, 1),
                    "recovered_s": round(recovered, 1),
                }
            )
    finally:
        load.stop()
    for row, (start, end) in zip(rows, windows, strict=True):
        # every request sent during the fault, counted once all have been answered
        window = ledger.between(start, end)
        row["stow_ok"] = sum(1 for o in window if o.kind == "stow" and o.status in (200, 202))
        row["5xx"] = sum(1 for o in window if o.status is not None and o.status >= 500)
        row["conn_errors"] = sum(1 for o in window if o.status is None)
    wait_ready(tier)
    result = audit(tier.root, ledger)
    verify_code, verify_output = run_verify(tier)
    before_faults = ledger.between(0.0, first_fault)
    figures = {
        "sent": len(ledger.sent),
        "acknowledged": len(ledger.acknowledged),
        "verified": result.verified,
        "lost": len(result.lost),
        "corrupt": len(result.corrupt) + len(result.unreadable) + len(result.unknown),
        "corrupt_reads_during_faults": len(ledger.corrupt_reads),
        "unacknowledged_but_stored_whole": result.unacknowledged_visible,
        "gave_up_after_retries": len(ledger.gave_up),
        "5xx_total": sum(1 for o in ledger.outcomes if o.status is not None and o.status >= 500),
        "5xx_before_faults": sum(1 for o in before_faults if o.status and o.status >= 500),
        "connection_errors_total": sum(1 for o in ledger.outcomes if o.status is None),
        "wado_reads": dict(load.reads),
        "tessera_verify_exit": verify_code,
        "seconds": round(time.monotonic() - started, 1),
    }
    report = tmp_path_factory.getbasetemp() / "fault-suite.json"
    report.write_text(to_json({"faults": rows, "figures": figures}))
    with capsys.disabled():
        print("\n\nfault-injection suite\n" + summary_table(rows, list(rows[0])) if rows else "")
        print("\n" + "\n".join(f"{key:32} {value}" for key, value in figures.items()))
        print(f"(written to {report})\n")
        if verify_code:
            print("tessera verify:\n" + verify_output[-3000:])

    assert not result.lost, f"acknowledged instances lost: {result.lost[:10]}"
    assert not result.corrupt, f"visible instances with other bytes: {result.corrupt[:10]}"
    assert not result.unreadable, f"visible but not retrievable: {result.unreadable[:10]}"
    assert not result.unknown, f"visible instances nobody sent: {result.unknown[:10]}"
    assert not ledger.corrupt_reads, f"reads of other bytes: {ledger.corrupt_reads[:10]}"
    assert result.verified == len(ledger.acknowledged)
    assert not ledger.gave_up, f"never acknowledged despite retries: {ledger.gave_up}"
    assert figures["5xx_before_faults"] == 0
    assert len(ledger.acknowledged) >= 100, "too little load to say anything"
