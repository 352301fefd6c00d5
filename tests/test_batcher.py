"""The replica's batcher: while a batch runs, calls queue, and the next batch takes them all."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from serve.runtime.batcher import ContinuousBatcher


class SlowModel:
    """Doubles its input after `seconds`; remembers each batch's size."""

    def __init__(self, seconds: float = 0.05) -> None:
        self.seconds = seconds
        self.sizes: list[int] = []

    async def __call__(self, calls: list[np.ndarray], enqueued: list[float]) -> np.ndarray:
        batch = np.concatenate(calls)
        self.sizes.append(len(batch))
        await asyncio.sleep(self.seconds)
        if np.isnan(batch).any():
            raise ValueError("nan in batch")
        return batch * 2


def one(value: float, n: int = 1) -> np.ndarray:
    return np.full((n, 1), value, np.float32)


def test_calls_arriving_during_a_batch_form_the_next_one_whole() -> None:
    model = SlowModel()

    async def scenario() -> list[np.ndarray]:
        batcher = ContinuousBatcher(model, max_batch_size=16, batch_wait_timeout_s=0.001)
        first = batcher.enqueue(one(0))
        await asyncio.sleep(0.01)  # the first batch is running now
        rest = [batcher.enqueue(one(i)) for i in range(1, 11)]
        return await asyncio.gather(first, *rest)

    answers = asyncio.run(scenario())
    assert model.sizes == [1, 10]
    assert [float(a[0, 0]) for a in answers] == [2.0 * i for i in range(11)]  # each caller gets its own rows


def test_batches_respect_max_batch_size_in_images_and_keep_order() -> None:
    model = SlowModel(0.01)

    async def scenario() -> list[np.ndarray]:
        batcher = ContinuousBatcher(model, max_batch_size=8, batch_wait_timeout_s=0.02)
        return await asyncio.gather(*[batcher.enqueue(one(i, 3)) for i in range(5)])

    answers = asyncio.run(scenario())
    assert max(model.sizes) <= 8 and sum(model.sizes) == 15
    assert [a.shape for a in answers] == [(3, 1)] * 5
    assert [float(a[0, 0]) for a in answers] == [0.0, 2.0, 4.0, 6.0, 8.0]


def test_a_failing_batch_fails_its_callers_and_the_batcher_goes_on() -> None:
    model = SlowModel(0.01)

    async def scenario() -> tuple[list, np.ndarray]:
        batcher = ContinuousBatcher(model, max_batch_size=4, batch_wait_timeout_s=0.005)
        bad = await asyncio.gather(batcher.enqueue(one(np.nan)), batcher.enqueue(one(1)), return_exceptions=True)
        return bad, await batcher.enqueue(one(3))

    bad, good = asyncio.run(scenario())
    assert all(isinstance(e, ValueError) for e in bad)
    assert float(good[0, 0]) == 6.0


def test_a_batch_waits_only_for_a_call_known_to_be_on_its_way() -> None:
    model = SlowModel(0.01)

    async def alone(decoded_first: bool) -> float:
        batcher = ContinuousBatcher(model, max_batch_size=4, batch_wait_timeout_s=1.0)
        started = asyncio.get_running_loop().time()
        if decoded_first:  # as a runner calls it: the call itself was expected until its images are queued
            with batcher.expecting():
                await asyncio.sleep(0.01)  # decoding
        await batcher.enqueue(one(1))
        return asyncio.get_running_loop().time() - started

    # nothing else on its way: no wait for the 1 s timeout, neither for a bare call nor for one that was decoding
    assert asyncio.run(alone(decoded_first=False)) < 0.5
    assert asyncio.run(alone(decoded_first=True)) < 0.5
    assert model.sizes == [1, 1]

    async def joined() -> None:
        batcher = ContinuousBatcher(model, max_batch_size=4, batch_wait_timeout_s=1.0)

        async def decoded_later() -> np.ndarray:
            with batcher.expecting():
                await asyncio.sleep(0.05)  # decoding
            return await batcher.enqueue(one(2))

        second = asyncio.create_task(decoded_later())
        await asyncio.sleep(0)  # the second call is decoding now
        await asyncio.gather(batcher.enqueue(one(1)), second)

    asyncio.run(joined())
    assert model.sizes == [1, 1, 2]  # the first call waited for the second, decoding meanwhile


def test_a_call_larger_than_a_batch_is_refused() -> None:
    batcher = ContinuousBatcher(SlowModel(), max_batch_size=2, batch_wait_timeout_s=0)
    with pytest.raises(ValueError, match="max_batch_size"):
        batcher.enqueue(one(0, 3))
