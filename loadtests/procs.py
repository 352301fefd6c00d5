"""The server's process tree and memory, read from /proc (Linux) so no extra dependency is needed."""
from __future__ import annotations

import os
import re
from pathlib import Path

from serve.cluster.procs import process_tree  # noqa: F401 (the load tests' view of a server's tree)

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def rss_bytes(pid: int) -> int:
    """Resident set size; 0 for a process that is gone."""
    try:
        return int((Path("/proc") / str(pid) / "statm").read_text().split()[1]) * PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return 0


def title(pid: int) -> str:
    """The process title as `ps` shows it (Ray workers rename themselves `ray::ServeReplica:...`)."""
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def short_name(full_title: str) -> str:
    """A name that stays put while the process works: Ray appends the running method to a worker's title
    (`ray::ServeReplica:app:Ingress.handle_request`), other processes are named by program and module."""
    words = full_title.split()
    if not words:
        return "?"
    if words[0].startswith("ray::"):
        return re.sub(r"\.[A-Za-z_]\w*$", "", words[0][len("ray::"):])
    program = os.path.basename(words[0])
    if not program.startswith("python") or len(words) < 2:
        return program
    return f"{program} {words[words.index('-m') + 1] if '-m' in words[:-1] else os.path.basename(words[1])}"


def memory_by_process(root: int) -> dict[str, float]:
    """RSS in MB of every process in the tree, keyed `pid:name`."""
    return {f"{pid}:{short_name(title(pid))}": rss_bytes(pid) / 1e6 for pid in process_tree(root)}
