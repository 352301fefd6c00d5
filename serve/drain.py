"""Shutdown without dropping work: once closed, new requests are refused (503, so balancers move on)
while the ones already admitted finish."""
import asyncio
import time


class DrainGate:
    def __init__(self) -> None:
        self.inflight = 0
        self.closed = False
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.inflight += 1
        self._idle.clear()

    def exit(self) -> None:
        self.inflight -= 1
        if self.inflight == 0:
            self._idle.set()

    async def close(self, timeout_s: float) -> dict:
        """Refuse from now on; wait (bounded) for the admitted requests. Says how it went, for the log."""
        self.closed = True
        started = time.monotonic()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except asyncio.TimeoutError:
            pass
        return {"waited_s": round(time.monotonic() - started, 3), "unfinished": self.inflight}
