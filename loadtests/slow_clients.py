"""Slow clients on raw sockets, as an attacker writes them: a body that stops after a few bytes, headers that
never end, a client that sends requests and never reads the answers. Shared by the slow-clients scenario and
tests/test_slow_clients.py. They only ever connect to 127.0.0.1 (from any 127/8 source address, so the
server can tell them from the normal traffic)."""
from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass
from typing import Sequence

TARGET = "127.0.0.1"
KINDS = ("body", "header", "reader", "partial")
# The body promised is 100 kB, four bytes come.
SLOW_BODY = (b"POST /classify HTTP/1.1\r\nHost: resfam\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n"
             b"\x89PNG")
# 32 kB of it come: more than a buffering front door holds (HAProxy's 16 kB), so it reaches the ingress and holds
# an ongoing-request slot there until the ingress's body pace cuts it.
PARTIAL_BODY = SLOW_BODY + bytes(32 * 1024)
SLOW_HEADER = b"POST /classify HTTP/1.1\r\nHost: resfam\r\nContent-Type: ima"
# Pipelined requests whose answers (the OpenAPI document, ~30 kB each) are never read.
SLOW_READER = b"GET /openapi.json HTTP/1.1\r\nHost: resfam\r\n\r\n" * 64
READER_LOOK_S = 2.0


@dataclass
class Stalled:
    """One stalled connection: how it ended and after how long (seconds from its last byte sent)."""

    kind: str
    status: int  # the HTTP status the server answered with; 0: none (closed, or still open at the end)
    closed: bool  # the server closed the connection
    held_s: float
    answer: bytes = b""  # the start of the server's answer, for diagnosis
    answered_s: float | None = None  # seconds from its last byte until the answer's first; None: no answer


async def _stall(kind: str, port: int, source: str, stop_at: float) -> Stalled:
    """Connect, send the kind's bytes, then wait (never past `stop_at`) for the server to answer or close."""
    sock = socket.socket()
    if kind == "reader":  # a small window, so unread answers back up into the server quickly
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.bind((source, 0))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.sock_connect(sock, (TARGET, port)), 10)
        await loop.sock_sendall(sock, {"body": SLOW_BODY, "header": SLOW_HEADER, "reader": SLOW_READER, "partial": PARTIAL_BODY}[kind])
        sent = time.monotonic()
        if kind == "reader":  # read nothing until READER_LOOK_S before the end; then see what the server did
            await asyncio.sleep(max(0.0, stop_at - READER_LOOK_S - time.monotonic()))
        head, closed, answered_s = b"", False, None
        while time.monotonic() < stop_at:
            try:
                chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), max(0.01, stop_at - time.monotonic()))
            except asyncio.TimeoutError:
                break
            if not chunk:
                closed = True
                break
            if not head:  # an answer; the server must still close
                head, answered_s = chunk[:200], time.monotonic() - sent
        status = int(head[9:12]) if head.startswith(b"HTTP/1.1 ") and head[9:12].isdigit() else 0
        return Stalled(kind, status, closed, time.monotonic() - sent, head, answered_s)
    except OSError:
        return Stalled(kind, 0, True, 0.0)
    finally:
        sock.close()


class _Pacer:
    """New connections at most `rate` per second over all attackers, as slowloris tools open them (a tight
    reconnect loop would be a request flood, a different attack)."""

    def __init__(self, rate: float | None) -> None:
        self.gap_s = 1 / rate if rate else 0.0
        self.next_at = 0.0

    async def wait(self) -> None:
        now = time.monotonic()
        start = max(now, self.next_at)
        self.next_at = start + self.gap_s
        await asyncio.sleep(start - now)


async def _attacker(kind: str, port: int, source: str, stop_at: float, repeat: bool, pacer: _Pacer,
                    into: list[Stalled]) -> None:
    while time.monotonic() < stop_at:
        await pacer.wait()
        if time.monotonic() >= stop_at:
            return
        into.append(await _stall(kind, port, source, stop_at))
        if not repeat:
            return


class Attack:
    """`counts` connections of each kind held open at once, from `sources` in turn, in a thread of their own,
    for `duration_s`; with `repeat` each reconnects as soon as the server lets it go (a persistent attacker),
    opening at most `rate_per_s` connections a second in all (None: all at once)."""

    def __init__(self, port: int, counts: dict[str, int], duration_s: float, sources: Sequence[str] = ("127.0.0.2",),
                 repeat: bool = True, rate_per_s: float | None = None) -> None:
        unknown = set(counts) - set(KINDS)
        if unknown or not sources or not all(s.startswith("127.") for s in sources):
            raise ValueError(f"kinds are {KINDS} and sources loopback addresses, not {unknown or sources}")
        self.port, self.counts, self.duration_s, self.sources, self.repeat = port, counts, duration_s, sources, repeat
        self.pacer = _Pacer(rate_per_s)
        self.results: list[Stalled] = []
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        stop_at = time.monotonic() + self.duration_s
        kinds = [kind for kind, n in self.counts.items() for _ in range(n)]
        await asyncio.gather(*(_attacker(kind, self.port, self.sources[i % len(self.sources)], stop_at, self.repeat,
                                         self.pacer, self.results) for i, kind in enumerate(kinds)))

    def __enter__(self) -> "Attack":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.join()

    def join(self) -> list[Stalled]:
        self._thread.join(self.duration_s + 30)
        return self.results

    def of(self, kind: str) -> list[Stalled]:
        return [r for r in self.results if r.kind == kind]
