"""A process and its descendants, from /proc: what belongs to this server (Ray's processes, HAProxy)."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def _parents() -> dict[int, int]:
    """pid -> parent pid for every process we can read."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name sits in parentheses and may itself hold spaces or parentheses.
        fields = stat[stat.rindex(")") + 2:].split()
        parents[int(entry.name)] = int(fields[1])
    return parents


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants that are alive now."""
    children: dict[int, list[int]] = {}
    for pid, parent in _parents().items():
        children.setdefault(parent, []).append(pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def start_time(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot): tells a process from a later one that reused its pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2:].split()[19])


def snapshot(root: int) -> dict[int, int]:
    """`root`'s tree now, each pid with its start time."""
    found = {pid: start_time(pid) for pid in process_tree(root)}
    return {pid: started for pid, started in found.items() if started is not None}


def process_running(pid: int) -> bool:
    """Alive and not a zombie (which has exited; only its parent's wait is missing)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def still_running(known: dict[int, int], grace_s: float = 0.0) -> list[int]:
    """Those of `known` (pid -> start time: the same processes, not later ones with a reused pid) still running
    after up to `grace_s` of waiting for them to go."""
    deadline = time.monotonic() + grace_s
    while True:
        alive = [pid for pid, started in known.items() if start_time(pid) == started and process_running(pid)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.2)


def kill_survivors(known: dict[int, int], grace_s: float = 5.0) -> list[int]:
    """SIGKILL the processes of `known` still running after `grace_s`. Ray's workers outlive a raylet that died
    before them; re-parented to init, they are no longer in any tree."""
    alive = still_running(known, grace_s)
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return alive
