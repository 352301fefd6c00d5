"""Memory of every server process over time, sampled in a background thread while load runs."""
from __future__ import annotations

import threading
import time

from loadtests.server import LiveServer


class MemorySampler:
    """Samples `server.memory_by_process()` every `period_s`; `samples` is [(seconds since start, {proc: MB})]."""

    def __init__(self, server: LiveServer, period_s: float = 2.0) -> None:
        self.server = server
        self.period_s = period_s
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.started = 0.0

    def _run(self) -> None:
        while True:
            self.samples.append((time.perf_counter() - self.started, self.server.memory_by_process()))
            if self._stop.wait(self.period_s):
                return

    def __enter__(self) -> "MemorySampler":
        self.started = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def series(self) -> dict[str, tuple[list[float], list[float]]]:
        """Per process: (times, MB); a process missing from a sample (not yet started, or gone) is left out there."""
        out: dict[str, tuple[list[float], list[float]]] = {}
        for t, by_process in self.samples:
            for name, mb in by_process.items():
                xs, ys = out.setdefault(name, ([], []))
                xs.append(t)
                ys.append(mb)
        return out

    def totals(self) -> tuple[list[float], list[float]]:
        return [t for t, _ in self.samples], [sum(m.values()) for _, m in self.samples]
