"""Shutdown without dropping work: once closed, new requests are refused (503, so balancers move on)
while the ones already admitted finish."""
import asyncio
import time
from typing import Callable

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send


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


class DrainMiddleware:
    """Counts admitted HTTP requests into the app's `state.drain` gate and refuses new ones once it is closed.

    Plain ASGI rather than Starlette's BaseHTTPMiddleware, which costs a task group and two memory streams
    per request on the hot path.
    """

    def __init__(self, app: ASGIApp, always_open: tuple[str, ...], refusal: Callable[[], Response]) -> None:
        self.app = app
        self.always_open = always_open  # probes and scrapes must see the shutdown, not a refusal
        self.refusal = refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        gate: DrainGate = scope["app"].state.drain
        if gate.closed and not scope["path"].startswith(self.always_open):
            await self.refusal()(scope, receive, send)
            return
        gate.enter()
        try:
            await self.app(scope, receive, send)
        finally:
            gate.exit()
