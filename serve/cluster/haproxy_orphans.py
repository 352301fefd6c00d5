"""HAProxy processes that outlive their server: a local server's own directory names its owner, and the next
local server stops the haproxy of an owner that is gone. Read from /proc (Linux)."""
from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

from serve.cluster.procs import process_running

HAPROXY_DIR_PREFIX = "resfam-hap-"
HAPROXY_PARENT = Path("/tmp")  # as Ray's own default: HAProxy refuses socket paths over 97 bytes
OWNER_FILE = "owner.pid"


def own_haproxy_dir() -> tempfile.TemporaryDirectory:
    """Ray adds the node id below it. It names its owner inside (not in its name, which has no bytes to
    spare) for `reap_orphaned_haproxy`."""
    directory = tempfile.TemporaryDirectory(prefix=HAPROXY_DIR_PREFIX, dir=HAPROXY_PARENT, ignore_cleanup_errors=True)
    (Path(directory.name) / OWNER_FILE).write_text(str(os.getpid()))
    return directory


def reap_orphaned_haproxy(parent: Path = HAPROXY_PARENT) -> list[int]:
    """A server killed outright (SIGKILL, the OOM killer) cannot stop its HAProxy: Ray's manager actor dies,
    and the haproxy it started lives on under init, holding the HTTP port. Stop those of owners that are
    gone and remove their directories; returns the pids stopped."""
    stopped: list[int] = []
    if not Path("/proc").is_dir():  # no way to tell a live owner from a dead one: touch nothing
        return stopped
    for directory in parent.glob(f"{HAPROXY_DIR_PREFIX}*"):
        try:
            owner_pid = int((directory / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not ours to judge: no owner recorded
        if process_running(owner_pid):
            continue
        for pid in haproxies_using(directory):
            try:
                os.kill(pid, signal.SIGKILL)
                stopped.append(pid)
            except ProcessLookupError:
                pass
        shutil.rmtree(directory, ignore_errors=True)
    _wait_until_gone(stopped)
    return stopped


def _wait_until_gone(pids: list[int], timeout_s: float = 5.0) -> None:
    """A killed process holds its sockets until the kernel has torn it down: the port check comes next."""
    deadline = time.monotonic() + timeout_s
    while any(process_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def haproxy_arguments(pid: int) -> list[str]:
    """The command line of a haproxy process; [] for any other, or one that is gone."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []
    return args if Path(args[0]).name == "haproxy" else []


def haproxies_using(directory: Path) -> list[int]:
    """haproxy processes with a file of `directory` on their command line."""
    pids = (int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit())
    return [pid for pid in pids if any(a.startswith(f"{directory}/") for a in haproxy_arguments(pid))]
