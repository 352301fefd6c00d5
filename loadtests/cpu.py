"""CPU time of a server's processes, from /proc/<pid>/stat: where each request's cost lands (proxy, ingress,
classifier, Ray's daemons, HAProxy), so the serving path's cost outside ONNX Runtime shows."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, TypeVar

from loadtests.procs import process_tree, short_name, title

TICKS_PER_S = os.sysconf("SC_CLK_TCK")
GENERATOR = "load generator"  # this process: the closed-loop client, measured alongside the server
T = TypeVar("T")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (not its children); 0 for a process that is gone."""
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S  # utime, stime: fields 14 and 15 of proc(5)


class CpuMeter:
    """CPU seconds each of some processes spent between one reading and the next."""

    def __init__(self, pids: list[int]) -> None:
        self.last = {pid: cpu_seconds(pid) for pid in pids}

    def since(self) -> list[float]:
        now = {pid: cpu_seconds(pid) for pid in self.last}
        spent = [round(now[pid] - self.last[pid], 1) for pid in self.last]
        self.last = now
        return spent


def snapshot(root: int) -> dict[int, tuple[str, float]]:
    """pid -> (process name, CPU seconds) for `root` and its descendants now."""
    return {pid: (short_name(title(pid)), cpu_seconds(pid)) for pid in process_tree(root)}


def by_name(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds spent between two snapshots, summed per process name. A process born in between counts from
    zero; one that died in between is lost (its time moves to its parent only once reaped)."""
    spent: dict[str, float] = {}
    for pid, (name, seconds) in after.items():
        spent[name] = spent.get(name, 0.0) + seconds - before.get(pid, (name, 0.0))[1]
    return dict(sorted(spent.items(), key=lambda kv: -kv[1]))


def measure(root: int, work: Callable[[], T]) -> tuple[T, dict[str, float]]:
    """Run `work` (the load) and return its result and the CPU seconds per process name of `root`'s tree during
    it, plus this process's own time as GENERATOR."""
    before, own = snapshot(root), time.process_time()
    result = work()
    spent = by_name(before, snapshot(root))
    spent[GENERATOR] = time.process_time() - own
    return result, spent
