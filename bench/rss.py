"""Peak resident memory of a process tree, sampled in a background thread."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import psutil


def _label(process: psutil.Process) -> str:
    try:
        cmdline = process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return f"pid {process.pid}"
    joined = " ".join(cmdline)
    if "multiprocessing" in joined:
        # A worker (or the resource tracker) of a service's process pool.
        parent = process.parent()
        owner = _label(parent) if parent is not None else "pool"
        return f"{owner} {'resource tracker' if 'resource_tracker' in joined else 'worker'}"
    if cmdline and "nats-server" in cmdline[0]:
        return "nats-server"
    if cmdline and cmdline[0].rsplit("/", 1)[-1] == "Orthanc":
        return "orthanc"
    program = next((i for i, part in enumerate(cmdline) if part.endswith("tessera")), None)
    if program is not None:
        command = cmdline[program + 1 : program + 2]
        return "supervisor" if command == ["serve"] else (command or ["tessera"])[0]
    return " ".join(cmdline[:3])[:40] or f"pid {process.pid}"


@dataclass
class PeakRss:
    """Samples every ``interval`` seconds; ``peaks`` maps a process label to its peak bytes
    (a label shared by several processes, e.g. worker pools, is numbered: ``render-2``)."""

    root_pid: int
    interval: float = 0.05
    _by_pid: dict[int, int] = field(default_factory=dict)
    _labels: dict[int, str] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> PeakRss:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def peaks(self) -> dict[str, int]:
        """Peak bytes by label; several processes of one label (``tessera serve`` starts
        ``gateway``, ``gateway-2``, …) are numbered the same way, in pid order."""
        seen: dict[str, int] = {}
        result: dict[str, int] = {}
        for pid in sorted(self._labels):
            label = self._labels[pid]
            seen[label] = seen.get(label, 0) + 1
            result[label if seen[label] == 1 else f"{label}-{seen[label]}"] = self._by_pid[pid]
        return result

    def _run(self) -> None:
        root = psutil.Process(self.root_pid)
        while not self._stop.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for process in tree:
                try:
                    rss = process.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                if process.pid not in self._labels:
                    self._labels[process.pid] = _label(process)
                self._by_pid[process.pid] = max(self._by_pid.get(process.pid, 0), rss)
            self._stop.wait(self.interval)
