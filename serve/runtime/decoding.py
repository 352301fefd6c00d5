"""How a process decodes a model's images (where, exact or fast) and the bound on the bytes of decoded pixels it
holds at once, so that large photos wait or are refused and never run it out of memory.

Each thread of the decoding pool holds one whole decoded image, so without a bound the memory a process needs
grows with the threads and the photos' size (16 decoded 40-megapixel photos hold 2.5 GB), not with the load.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import functools
from dataclasses import dataclass
from typing import AsyncIterator

from serve.errors import Overloaded, PayloadTooLarge

MIB = 1 << 20


@dataclass(frozen=True)
class Decoding:
    """One model's decoding: `where` (ModelDeployment.preprocess_in), `mode` (exact|fast, ModelDeployment.decode)
    and the decoding process's budget (limits.decode_budget_bytes, limits.decode_wait_s)."""

    where: str
    mode: str
    budget_bytes: int
    wait_s: float

    def budget(self) -> "DecodeBudget":
        return process_budget(self.budget_bytes, self.wait_s)


@functools.cache
def process_budget(capacity_bytes: int, wait_s: float) -> "DecodeBudget":
    """This process's one budget (models decoded in the same process share it)."""
    give_back_large_buffers()
    return DecodeBudget(capacity_bytes, wait_s)


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
LARGE_BUFFER = 4 * MIB


def give_back_large_buffers() -> None:
    """Buffers of LARGE_BUFFER and more (decoded photos) get pages of their own, returned to the system when freed.
    By default glibc raises its threshold after the first such buffer is freed and serves the next ones from
    per-thread arenas that keep their pages: the replica then outgrew its idle size by more than its budget."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: its allocator has its own policy
        return
    libc.mallopt(M_MMAP_THRESHOLD, LARGE_BUFFER)


class DecodeBudget:
    """Requests reserve the bytes their images will hold decoded before decoding them. One that does not fit
    waits up to `wait_s` (then 503 with Retry-After); one larger than the whole budget is refused at once (413).

    Grants are first-fit in arrival order, not strictly first-come: a small request never waits behind a big one
    that does not fit yet; a big one passed over that way times out to a 503 and its client retries. Event-loop
    only (no locks): the replica and the ingress reserve on their event loop and decode in worker threads.
    """

    def __init__(self, capacity_bytes: int, wait_s: float) -> None:
        if capacity_bytes < 1 or wait_s < 0:
            raise ValueError("a decode budget needs capacity_bytes >= 1 and wait_s >= 0")
        self.capacity, self.wait_s = capacity_bytes, wait_s
        self.held = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @contextlib.asynccontextmanager
    async def reserve(self, nbytes: int) -> AsyncIterator[None]:
        await self.acquire(nbytes)
        try:
            yield
        finally:
            self.release(nbytes)

    async def acquire(self, nbytes: int) -> None:
        if nbytes > self.capacity:
            raise PayloadTooLarge(f"the images need {nbytes / MIB:.0f} MiB of decoded pixels and this server decodes "
                                  f"at most {self.capacity / MIB:.0f} MiB at once: send fewer or smaller images")
        if self.held + nbytes <= self.capacity:
            self.held += nbytes
            return
        entry = (nbytes, asyncio.get_running_loop().create_future())
        self._waiters.append(entry)
        try:
            await asyncio.wait([entry[1]], timeout=self.wait_s)  # unlike wait_for, leaves the future alone
        except asyncio.CancelledError:
            self._abandon(entry)
            raise
        if not entry[1].done():  # nothing ran between the timeout and here, so it was not granted meanwhile
            self._abandon(entry)
            raise Overloaded(f"the server is decoding all the pixels it may hold ({self.capacity / MIB:.0f} MiB); "
                             "retry shortly")

    def release(self, nbytes: int) -> None:
        self.held -= nbytes
        for entry in list(self._waiters):
            if self.held + entry[0] <= self.capacity:
                self._waiters.remove(entry)
                self.held += entry[0]
                entry[1].set_result(None)

    def _abandon(self, entry: tuple[int, asyncio.Future[None]]) -> None:
        """A waiter that gives up: out of the queue, or, if granted just now, its bytes back."""
        if entry[1].done():
            self.release(entry[0])
        else:
            self._waiters.remove(entry)
            entry[1].cancel()
