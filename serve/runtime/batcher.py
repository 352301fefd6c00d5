"""Dynamic batching for one model worker: while a batch runs, calls queue; the next batch takes them all.

Ray Serve's `@serve.batch` (2.60) forms the next batch as soon as the running one *starts* and only then
waits for it, so under steady load its batches stay the size of one arrival window (mostly 1 on
ResNet-50 at concurrency 8 here; loadtests/results/batching). This batcher forms a batch only when the
worker is free: everything queued by then, up to `max_batch_size` images, waiting up to
`batch_wait_timeout_s` for more only while the batch is not full and a call is known to be on its way (its images
are being decoded in this process: `expecting`). Without one there is nothing to wait for, and a wait would only
add itself to the latency (at c=1, the shipped 5 ms on every request). A call stops being expected when its
decoding ends, and its images are queued in the same step of the event loop (`enqueue` is not a coroutine), so the
batch it would have waited for never waits for the call itself.
"""
import asyncio
import contextlib
import time
from typing import Awaitable, Callable, Iterator

import numpy as np

# (images, enqueued at) of every call in the batch -> probabilities of the concatenated images
BatchRunner = Callable[[list[np.ndarray], list[float]], Awaitable[np.ndarray]]


class ContinuousBatcher:
    def __init__(self, run: BatchRunner, max_batch_size: int, batch_wait_timeout_s: float) -> None:
        self.run = run
        self.max_batch_size = max_batch_size
        self.wait_s = batch_wait_timeout_s
        self.queue: asyncio.Queue = asyncio.Queue()
        self.carried: tuple | None = None  # a call that did not fit the last batch goes first in the next
        self.worker: asyncio.Task | None = None
        self.expected = 0  # calls on their way (see `expecting`)

    @contextlib.contextmanager
    def expecting(self) -> Iterator[None]:
        """Around a call's decoding, not its `enqueue`: a batch that is not full may wait for the call meanwhile."""
        self.expected += 1
        try:
            yield
        finally:
            self.expected -= 1

    def enqueue(self, images: np.ndarray) -> asyncio.Future:
        """Queues `images` (at most `max_batch_size` of them) at once; the future gets their probabilities."""
        if len(images) > self.max_batch_size:
            raise ValueError(f"{len(images)} images exceed max_batch_size {self.max_batch_size}")
        loop = asyncio.get_running_loop()
        if self.worker is None or self.worker.done():
            self.worker = loop.create_task(self._work())
        future = loop.create_future()
        self.queue.put_nowait((images, time.perf_counter(), future))
        return future

    async def _next_batch(self) -> list[tuple]:
        first, self.carried = self.carried or await self.queue.get(), None
        batch, size = [first], len(first[0])
        deadline = time.perf_counter() + self.wait_s
        while size < self.max_batch_size:
            if self.queue.empty():
                remaining = deadline - time.perf_counter()
                if remaining <= 0 or not self.expected:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
            else:
                item = self.queue.get_nowait()
            if size + len(item[0]) > self.max_batch_size:
                self.carried = item
                break
            batch.append(item)
            size += len(item[0])
        return batch

    async def _work(self) -> None:
        while True:
            batch = await self._next_batch()
            live = [item for item in batch if not item[2].done()]  # callers that gave up are skipped
            if not live:
                continue
            try:
                probs = await self.run([images for images, _, _ in live], [enqueued for _, enqueued, _ in live])
            except Exception as exc:  # every caller in the batch gets the error; the worker goes on
                for _, _, future in live:
                    if not future.done():
                        future.set_exception(exc)
                continue
            bounds = np.cumsum([len(images) for images, _, _ in live])[:-1]
            for (_, _, future), part in zip(live, np.split(probs, bounds)):
                if not future.done():
                    future.set_result(part)
