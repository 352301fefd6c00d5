"""A process and its descendants, from /proc: what belongs to this server (Ray's processes, HAProxy)."""
from __future__ import annotations

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


def kill_survivors(known: dict[int, int], grace_s: float = 5.0) -> list[int]:
    """SIGKILL the processes of `known` (the same ones: same start time) still alive after `grace_s`.
    Ray's workers outlive a raylet that died before them; re-parented to init, they are no longer in any tree."""
    import os
    import signal
    import time

    deadline = time.monotonic() + grace_s
    while (alive := [p for p, started in known.items() if start_time(p) == started and not _zombie(p)]) \
            and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return alive


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True
