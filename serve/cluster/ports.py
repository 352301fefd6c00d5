"""Is our HTTP port really ours? Ray's proxy and HAProxy bind with SO_REUSEPORT, so a second server on the
same port starts happily and the kernel splits clients between the two. We look before we start, and
again once we listen."""
from __future__ import annotations

import errno
import ipaddress
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

LISTEN = "0A"  # TCP state in /proc/net/tcp


@dataclass(frozen=True)
class Listener:
    pid: int
    name: str

    def __str__(self) -> str:
        return f"pid {self.pid} ({self.name})"


class PortBusy(RuntimeError):
    """Another process listens on the port we were configured for."""


def _listening_inodes(port: int, host: str) -> set[str]:
    """Sockets listening on `port` at `host` or at the wildcard address (which also takes `host`'s clients)."""
    wanted = {ipaddress.ip_address(host)} if host not in ("", "0.0.0.0", "::") else None
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, state, inode = fields[1], fields[3], fields[9]
            hex_ip, hex_port = address.split(":")
            if state != LISTEN or int(hex_port, 16) != port:
                continue
            ip = _proc_ip(hex_ip)
            if wanted is None or ip.is_unspecified or ip in wanted or _mapped(ip) in wanted:
                inodes.add(inode)
    return inodes


def _proc_ip(hex_ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    raw = bytes.fromhex(hex_ip)
    # /proc prints each 32-bit word in host (little-endian) order
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(words)


def _mapped(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    return ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None


def listeners(port: int, host: str = "127.0.0.1") -> list[Listener]:
    """The processes holding a listening socket on the port (readable for our own processes, or all as root)."""
    inodes = {f"socket:[{i}]" for i in _listening_inodes(port, host)}
    found = []
    if not inodes:
        return found
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                found.append(Listener(int(proc.name), _name(proc)))
        except OSError:
            continue
    return sorted(found, key=lambda listener: listener.pid)


def _name(proc: Path) -> str:
    cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").strip().decode(errors="replace")
    return cmdline[:80] or (proc / "comm").read_text().strip()


def ensure_port_free(host: str, port: int, settle_s: float = 5.0) -> None:
    """A plain bind (no SO_REUSEPORT) fails while anything listens there, whatever options it used;
    SO_REUSEADDR keeps connections in TIME_WAIT from a server that just stopped out of the way. A refusal with
    no listener to be seen is a socket still being torn down (a process just killed): retried for `settle_s`."""
    deadline = time.monotonic() + settle_s
    while True:
        try:
            _probe(host, port)
            return
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            holders = listeners(port, host)
            if holders or time.monotonic() >= deadline:
                names = ", ".join(map(str, holders)) or "a process this user cannot see"
                raise PortBusy(f"{host}:{port} is already in use by {names}; stop that server or set another "
                               "http.port") from None
            time.sleep(0.1)


def _probe(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))


def strangers_on_port(host: str, port: int, ours: Callable[[], set[int]], looks: int = 3,
                      apart_s: float = 0.5) -> list[Listener]:
    """Listeners that are not ours: another server that started on the port while we did. `ours` is asked after
    the listeners are listed, so a process of ours that started meanwhile (a reloaded haproxy) is known. A
    stranger must be there at every one of `looks`: a haproxy Ray is reloading can show for an instant as no one's
    (in HAProxy mode one start in ~30 stopped itself over one), while a rival server stays."""
    strangers: dict[int, Listener] | None = None
    for look in range(looks):
        if look:
            time.sleep(apart_s)
        holders = listeners(port, host)
        own = ours()
        now = {listener.pid: listener for listener in holders if listener.pid not in own}
        strangers = now if strangers is None else {pid: now[pid] for pid in now if pid in strangers}
        if not strangers:
            return []
    return list(strangers.values())
