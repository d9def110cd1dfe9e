"""Load and bookkeeping for the fault-injection suite (``tests/e2e/test_faults.py``).

A :class:`Ledger` records every byte string a client sent (by SHA-256), every instance a STOW
response acknowledged (200/202 with it in ReferencedSOPSequence, PS3.18 §10.5.3) and every
response or connection error, with its time. :class:`Load` runs a few writer threads (STOW-RS
of small synthetic CT instances, every one with its own SOP Instance UID) and a reader thread
(WADO-RS of acknowledged instances, checked byte for byte) for a bounded time and count.
Clients behave like a modality: a connection error, a timeout, a 5xx or a per-instance
failure is retried, a bounded number of times, with the same bytes.

:func:`probe` stores one fresh instance and reads it back (as stored and transcoded): the
first probe that succeeds after a fault ends that fault's recovery time. :func:`audit`
compares what the archive shows afterwards with the ledger.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import requests
from tests.support.distributed import DistributedTessera, service_environ
from tests.support.http import multipart_body, sequence_items

from bench.synthetic import SyntheticInstance, ct_series
from tessera_gateway.mediatype import parse_content_type
from tessera_gateway.multipart import iter_parts

AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'
IMPLICIT_VR = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2'
"""A transfer syntax other than the stored one: the answer comes through the codec."""

STOW_TIMEOUT = 60.0
READ_TIMEOUT = 20.0
MAX_ATTEMPTS = 12
"""A STOW is sent at most this often (the first try and its retries)."""

BACKOFF = (0.25, 0.5, 1.0, 2.0)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One HTTP exchange as a client saw it: a status, or ``None`` for a connection error."""

    at: float
    """When the request was sent (``time.monotonic``): a fault's window holds the requests
    sent during it, whenever they were answered."""
    kind: str
    status: int | None
    error: str = ""


@dataclass(frozen=True, slots=True)
class Sent:
    study_uid: str
    series_uid: str
    sha256: str


@dataclass
class Ledger:
    """What clients sent, what was acknowledged, and every outcome (thread safe)."""

    sent: dict[str, Sent] = field(default_factory=dict)
    acknowledged: dict[str, Sent] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)
    corrupt_reads: list[str] = field(default_factory=list)
    gave_up: dict[str, list[str]] = field(default_factory=dict)
    """SOP Instance UIDs still unacknowledged after ``MAX_ATTEMPTS`` (a finding, not a loss),
    with what each attempt got."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record_sent(self, instance: SyntheticInstance) -> None:
        sent = Sent(instance.study_uid, instance.series_uid, sha256(instance.data))
        with self._lock:
            self.sent[instance.sop_uid] = sent

    def acknowledge(self, sop_uid: str) -> None:
        with self._lock:
            self.acknowledged[sop_uid] = self.sent[sop_uid]

    def record(self, at: float, kind: str, status: int | None, error: str = "") -> None:
        with self._lock:
            self.outcomes.append(Outcome(at, kind, status, error))

    def corrupt(self, sop_uid: str) -> None:
        with self._lock:
            self.corrupt_reads.append(sop_uid)

    def give_up(self, sop_uids: list[str], attempts: list[str]) -> None:
        with self._lock:
            self.gave_up.update(dict.fromkeys(sop_uids, attempts))

    def some_acknowledged(self, rng: random.Random) -> tuple[str, Sent] | None:
        with self._lock:
            if not self.acknowledged:
                return None
            sop = rng.choice(list(self.acknowledged))
            return sop, self.acknowledged[sop]

    def between(self, start: float, end: float) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if start <= o.at < end]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def instance_url(root: str, study_uid: str, series_uid: str, sop_uid: str) -> str:
    return f"{root}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"


class SeedSource:
    """Distinct seeds for every batch of every thread (UIDs are random anyway)."""

    def __init__(self) -> None:
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            return next(self._counter)


def small_instances(count: int, seed: int) -> list[SyntheticInstance]:
    """``count`` 16 x 16 CT slices of one new study (a few kB each)."""
    return list(ct_series(count, seed=seed, rows=16, columns=16))


def store_with_retries(
    session: requests.Session,
    root: str,
    ledger: Ledger,
    instances: list[SyntheticInstance],
    *,
    kind: str = "stow",
    attempts: int = MAX_ATTEMPTS,
) -> set[str]:
    """STOW ``instances`` until each is acknowledged or ``attempts`` are spent; the
    acknowledged SOP Instance UIDs. Retried: connection errors, timeouts, 408/429/5xx, and
    instances in FailedSOPSequence (all of these instances are valid, so any failure is the
    archive's trouble). The bytes of a retry are the bytes of the first try."""
    for instance in instances:
        ledger.record_sent(instance)
    pending = {i.sop_uid: i for i in instances}
    acknowledged: set[str] = set()
    history: list[str] = []
    for attempt in range(attempts):
        if attempt:
            time.sleep(BACKOFF[min(attempt - 1, len(BACKOFF) - 1)])
        body, content_type = multipart_body([i.data for i in pending.values()])
        sent_at = time.monotonic()
        try:
            response = session.post(
                f"{root}/studies",
                data=body,
                headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
                timeout=STOW_TIMEOUT,
            )
        except requests.RequestException as exc:
            ledger.record(sent_at, kind, None, type(exc).__name__)
            history.append(type(exc).__name__)
            continue
        ledger.record(sent_at, kind, response.status_code)
        history.append(f"{response.status_code} {response.text[:300]}")
        if response.status_code in (200, 202, 409):
            for item in sequence_items(response.json(), "00081199"):
                sop = item["00081155"]["Value"][0]  # type: ignore[index]
                if sop in pending:
                    ledger.acknowledge(sop)
                    acknowledged.add(sop)
                    del pending[sop]
        elif response.status_code < 500 and response.status_code not in (408, 429):
            break  # a client error: retrying the same request cannot help
        if not pending:
            break
    if pending and kind == "stow":  # a probe tries once: its failures are the outage
        ledger.give_up(sorted(pending), history)
    return acknowledged


def read_back(
    session: requests.Session, url: str, accept: str = AS_STORED
) -> tuple[int | None, bytes | None]:
    """(status, the single part's bytes) of a WADO-RS instance retrieve; a body that does not
    parse as one complete part is ``(status, None)``, a connection error ``(None, None)``."""
    try:
        response = session.get(url, headers={"Accept": accept}, timeout=READ_TIMEOUT)
    except requests.RequestException:
        return None, None
    if response.status_code != 200:
        return response.status_code, None
    try:
        boundary = parse_content_type(response.headers["Content-Type"]).params["boundary"]
        parts = iter_parts(response.content, boundary)
    except Exception:
        return 200, None
    if len(parts) != 1:
        return 200, None
    return 200, parts[0][1]


@dataclass
class Load:
    """Writers (STOW) and a reader (WADO-RS) against ``root`` until :meth:`stop` or the bound."""

    root: str
    ledger: Ledger
    writers: int = 3
    batch: int = 3
    max_batches: int = 600
    """Per writer: the load is bounded in count as well as in time."""
    pause: float = 0.1
    """Seconds a writer waits between batches: sustained, not saturating (shared CI cores)."""
    max_seconds: float = 240.0
    stop_event: threading.Event = field(default_factory=threading.Event)
    seeds: SeedSource = field(default_factory=SeedSource)
    reads: Counter[str] = field(default_factory=Counter)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        for n in range(self.writers):
            self._threads.append(
                threading.Thread(target=self._write, args=(deadline,), name=f"writer-{n}")
            )
        self._threads.append(threading.Thread(target=self._read, args=(deadline,), name="reader"))
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 180.0) -> None:
        """Ask every client to finish its current STOW (retries included) and wait for them."""
        self.stop_event.set()
        for thread in self._threads:
            thread.join(timeout)
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            raise TimeoutError(f"load threads still running: {alive}")

    def _write(self, deadline: float) -> None:
        with requests.Session() as session:
            for _ in range(self.max_batches):
                if self.stop_event.is_set() or time.monotonic() > deadline:
                    return
                instances = small_instances(self.batch, self.seeds.next())
                store_with_retries(session, self.root, self.ledger, instances)
                time.sleep(self.pause)

    def _read(self, deadline: float) -> None:
        rng = random.Random(7)
        with requests.Session() as session:
            while not self.stop_event.is_set() and time.monotonic() < deadline:
                picked = self.ledger.some_acknowledged(rng)
                if picked is None:
                    time.sleep(0.1)
                    continue
                sop, sent = picked
                url = instance_url(self.root, sent.study_uid, sent.series_uid, sop)
                sent_at = time.monotonic()
                status, data = read_back(session, url)
                self.ledger.record(sent_at, "wado", status)
                if status == 200 and data is None:
                    self.reads["200 incomplete"] += 1
                elif data is not None and sha256(data) != sent.sha256:
                    self.ledger.corrupt(sop)
                    self.reads["200 corrupt"] += 1
                elif data is not None:
                    self.reads["200 verified"] += 1
                else:
                    self.reads["connection error" if status is None else str(status)] += 1
                time.sleep(0.05)


def probe(root: str, ledger: Ledger, seeds: SeedSource, *, transcode: bool = True) -> bool:
    """One round trip: STOW a fresh instance, read it back byte-exact (and, with
    ``transcode``, in another transfer syntax through the codec). True when all succeeded."""
    with requests.Session() as session:
        (instance,) = small_instances(1, seeds.next())
        if not store_with_retries(session, root, ledger, [instance], kind="probe", attempts=1):
            return False
        url = instance_url(root, instance.study_uid, instance.series_uid, instance.sop_uid)
        sent_at = time.monotonic()
        status, data = read_back(session, url)
        ledger.record(sent_at, "probe", status)
        if data is None or sha256(data) != sha256(instance.data):
            return False
        if transcode:
            sent_at = time.monotonic()
            status, data = read_back(session, url, IMPLICIT_VR)
            ledger.record(sent_at, "probe", status)
            return data is not None
        return True


def wait_recovered(
    root: str, ledger: Ledger, seeds: SeedSource, *, since: float, timeout: float = 90.0
) -> float:
    """Seconds from ``since`` (the fault) to the first successful :func:`probe`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe(root, ledger, seeds):
            return time.monotonic() - since
        time.sleep(0.2)
    raise TimeoutError(f"no successful round trip {timeout:.0f} s after the fault")


# --- the audit after the faults ---------------------------------------------------------------


@dataclass
class Audit:
    visible: int = 0
    """Instances QIDO-RS shows in the studies the clients touched."""
    verified: int = 0
    """Acknowledged instances found by QIDO and retrieved byte-exact."""
    lost: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    """Visible instances whose bytes are not exactly what a client sent for that UID."""
    unreadable: list[str] = field(default_factory=list)
    """Visible instances WADO-RS cannot return (bytes missing behind an index entry)."""
    unknown: list[str] = field(default_factory=list)
    """Visible instances no client ever sent."""
    unacknowledged_visible: int = 0
    """Sent, never acknowledged, yet stored complete (a STOW whose answer was lost)."""


def _visible_in_study(session: requests.Session, root: str, study_uid: str) -> set[str]:
    response = session.get(
        f"{root}/studies/{study_uid}/instances", params={"limit": 1000}, timeout=READ_TIMEOUT
    )
    if response.status_code == 204:
        return set()
    response.raise_for_status()
    return {item["00080018"]["Value"][0] for item in response.json()}


def audit(root: str, ledger: Ledger) -> Audit:
    """Every acknowledged instance found (QIDO) and byte-exact (WADO-RS); every visible
    instance of the clients' studies byte-identical to what was sent under its UID."""
    result = Audit()
    studies: dict[str, set[str]] = {}
    for sop, record in ledger.sent.items():
        studies.setdefault(record.study_uid, set()).add(sop)
    with requests.Session() as session:
        for study_uid in studies:
            visible = _visible_in_study(session, root, study_uid)
            result.visible += len(visible)
            for sop in visible:
                sent = ledger.sent.get(sop)
                if sent is None:
                    result.unknown.append(sop)
                    continue
                url = instance_url(root, sent.study_uid, sent.series_uid, sop)
                status, data = read_back(session, url)
                if data is None:
                    result.unreadable.append(f"{sop} (status {status})")
                elif sha256(data) != sent.sha256:
                    result.corrupt.append(sop)
                elif sop in ledger.acknowledged:
                    result.verified += 1
                else:
                    result.unacknowledged_visible += 1
            for sop in studies[study_uid] - visible:
                if sop in ledger.acknowledged:
                    result.lost.append(sop)
    return result


def summary_table(rows: list[dict[str, object]], columns: list[str]) -> str:
    """A plain text table (for the test output)."""
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def to_json(data: object) -> str:
    return json.dumps(data, indent=2, sort_keys=True)


def run_verify(tier: DistributedTessera, timeout: float = 120.0) -> tuple[int, str]:
    """``tessera verify`` over the tier's bucket and index (through the running query
    service), configured like the query service; (exit code, its output)."""
    query = tier.services["query"]
    env = service_environ(
        query.spec, tier=tier, data_dir=query.data_dir, metrics_port=None, traces_endpoint=None
    )
    env["TESSERA_LOG_FORMAT"] = "text"
    done = subprocess.run(
        [sys.executable, "-m", "tessera", "verify", "--concurrency", "4"],
        env=env,
        cwd=query.data_dir,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    return done.returncode, (done.stdout + done.stderr).decode(errors="replace")
