"""The haproxy processes of a live server, read from /proc: shared by the proxy-mode and harness tests."""
from __future__ import annotations

from itertools import takewhile
from pathlib import Path

from loadtests.procs import process_tree, title
from loadtests.server import LiveServer


def haproxy_processes(live: LiveServer) -> list[int]:
    """By the executable's name: the server's own command line may mention haproxy in its config path."""
    return [p for p in process_tree(live.pid) if Path(title(p).split(" ")[0]).name == "haproxy"]


def serving_haproxies(live: LiveServer) -> list[int]:
    """Those no other haproxy replaces: Ray reloads HAProxy by starting a new one with `-sf <old pids>`,
    and the old one lives on until its connections drain."""
    running = haproxy_processes(live)
    replaced = {old for p in running for old in _replaced_pids(p)}
    return [p for p in running if p not in replaced]


def haproxy_config(pid: int) -> Path | None:
    """The config file a haproxy runs with (its `-f`); None for anything else or a process that is gone."""
    args = _arguments(pid)
    if not args or Path(args[0]).name != "haproxy" or "-f" not in args:
        return None
    return Path(args[args.index("-f") + 1])


def _replaced_pids(pid: int) -> list[int]:
    args = _arguments(pid)
    if "-sf" not in args:
        return []
    return [int(a) for a in takewhile(str.isdigit, args[args.index("-sf") + 1:])]


def _arguments(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:  # gone meanwhile (a replaced one finishes draining)
        return []
