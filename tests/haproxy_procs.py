"""The haproxy processes of a live server, read from /proc: shared by the proxy-mode and harness tests."""
from __future__ import annotations

from itertools import takewhile
from pathlib import Path

from loadtests.procs import process_tree
from loadtests.server import LiveServer
from serve.cluster.haproxy_orphans import haproxy_arguments


def haproxy_processes(live: LiveServer) -> list[int]:
    """By the executable's name: the server's own command line may mention haproxy in its config path."""
    return [p for p in process_tree(live.pid) if haproxy_arguments(p)]


def serving_haproxies(live: LiveServer) -> list[int]:
    """Those no other haproxy replaces: Ray reloads HAProxy by starting a new one with `-sf <old pids>`,
    and the old one lives on until its connections drain."""
    running = haproxy_processes(live)
    replaced = {old for p in running for old in _replaced_pids(p)}
    return [p for p in running if p not in replaced]


def haproxy_config(pid: int) -> Path | None:
    """The config file a haproxy runs with (its `-f`); None for anything else or a process that is gone."""
    args = haproxy_arguments(pid)
    return Path(args[args.index("-f") + 1]) if "-f" in args else None


def haproxy_dir(live: LiveServer) -> Path:
    """The server's own directory of HAProxy files (Ray adds the node id below it)."""
    (directory,) = {config.parent.parent for p in haproxy_processes(live) if (config := haproxy_config(p))}
    return directory


def _replaced_pids(pid: int) -> list[int]:
    args = haproxy_arguments(pid)
    if "-sf" not in args:
        return []
    return [int(a) for a in takewhile(str.isdigit, args[args.index("-sf") + 1:])]
