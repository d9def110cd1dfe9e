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
    if cmdline and "nats-server" in cmdline[0]:
        return "nats-server"
    program = next((i for i, part in enumerate(cmdline) if part.endswith("tessera")), None)
    if program is not None:
        command = cmdline[program + 1 : program + 2]
        return "supervisor" if command == ["serve"] else (command or ["tessera"])[0]
    return " ".join(cmdline[:3])[:40] or f"pid {process.pid}"


@dataclass
class PeakRss:
    """Samples every ``interval`` seconds; ``peaks`` maps a process label to its peak bytes."""

    root_pid: int
    interval: float = 0.05
    peaks: dict[str, int] = field(default_factory=dict)
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
                label = _label(process)
                self.peaks[label] = max(self.peaks.get(label, 0), rss)
            self._stop.wait(self.interval)
