"""DecodeBudget: bytes of decoded pixels in flight per process; waits are bounded, oversize is refused."""
import asyncio
import random
import subprocess
import sys
from pathlib import Path

import pytest

from serve.errors import Overloaded, PayloadTooLarge
from serve.runtime.decoding import DecodeBudget, process_budget


def run(coro):
    return asyncio.run(coro)


def test_grants_what_fits_at_once_and_counts_it():
    async def main():
        budget = DecodeBudget(100, 0.1)
        await budget.acquire(60)
        await budget.acquire(40)
        assert budget.held == 100
        budget.release(60)
        return budget.held

    assert run(main()) == 40


def test_more_than_the_whole_budget_is_413_at_once():
    async def main():
        budget = DecodeBudget(100, 10)
        with pytest.raises(PayloadTooLarge) as caught:
            await asyncio.wait_for(budget.acquire(101), 1)  # refused, not queued for the 10 s wait
        return caught.value.status, budget.held, budget.waiting

    assert run(main()) == (413, 0, 0)


def test_a_waiter_gets_in_when_bytes_come_back():
    async def main():
        budget = DecodeBudget(100, 5)
        await budget.acquire(80)
        waiter = asyncio.create_task(budget.acquire(50))
        await asyncio.sleep(0.01)
        assert not waiter.done() and budget.waiting == 1
        budget.release(80)
        await asyncio.wait_for(waiter, 1)
        return budget.held, budget.waiting

    assert run(main()) == (50, 0)


def test_a_waiter_gives_up_after_wait_s_with_503_and_leaves_nothing_held():
    async def main():
        budget = DecodeBudget(100, 0.05)
        await budget.acquire(80)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(Overloaded) as caught:
            await budget.acquire(50)
        waited = loop.time() - started
        budget.release(80)
        return caught.value.status, waited, budget.held, budget.waiting

    status, waited, held, waiting = run(main())
    assert status == 503 and 0.04 <= waited < 1 and held == 0 and waiting == 0


def test_small_requests_pass_a_big_one_that_does_not_fit_yet():
    async def main():
        budget = DecodeBudget(100, 5)
        await budget.acquire(60)
        big = asyncio.create_task(budget.acquire(70))
        await asyncio.sleep(0.01)
        await asyncio.wait_for(budget.acquire(30), 0.5)  # fits beside the 60 although the big one waits
        assert not big.done()
        budget.release(60)
        budget.release(30)
        await asyncio.wait_for(big, 1)
        return budget.held

    assert run(main()) == 70


def test_a_cancelled_waiter_leaves_no_trace():
    async def main():
        budget = DecodeBudget(100, 5)
        await budget.acquire(100)
        waiter = asyncio.create_task(budget.acquire(10))
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        budget.release(100)
        return budget.held, budget.waiting

    assert run(main()) == (0, 0)


def test_reserve_returns_the_bytes_when_the_work_fails():
    async def main():
        budget = DecodeBudget(100, 0.1)
        with pytest.raises(RuntimeError):
            async with budget.reserve(70):
                raise RuntimeError("decoding failed")
        return budget.held

    assert run(main()) == 0


def test_many_concurrent_requests_never_hold_more_than_the_budget():
    async def main():
        budget = DecodeBudget(1000, 0.2)
        rng = random.Random(7)
        peak, outcomes = 0, {"ok": 0, "503": 0}

        async def request(nbytes: int) -> None:
            nonlocal peak
            try:
                async with budget.reserve(nbytes):
                    peak = max(peak, budget.held)
                    await asyncio.sleep(rng.uniform(0.001, 0.02))
                outcomes["ok"] += 1
            except Overloaded:
                outcomes["503"] += 1

        await asyncio.gather(*(request(rng.randint(1, 600)) for _ in range(300)))
        return peak, outcomes, budget.held, budget.waiting

    peak, outcomes, held, waiting = run(main())
    assert peak <= 1000 and held == 0 and waiting == 0
    assert outcomes["ok"] > 0 and outcomes["ok"] + outcomes["503"] == 300


def test_one_budget_per_process_for_the_same_figures():
    assert process_budget(1 << 20, 1.0) is process_budget(1 << 20, 1.0)
    assert process_budget(1 << 20, 1.0) is not process_budget(2 << 20, 1.0)


def test_invalid_budgets_are_refused():
    with pytest.raises(ValueError):
        DecodeBudget(0, 1)
    with pytest.raises(ValueError):
        DecodeBudget(10, -1)


FREED_BUFFERS = """
import os, sys, threading
import numpy as np
from loadtests.procs import rss_bytes
from serve.runtime.decoding import give_back_large_buffers
if sys.argv[1] == "give":
    give_back_large_buffers()
base = rss_bytes(os.getpid())
def work(seed):  # decoding threads: photos of 8-16 MB, a few alive at a time, freed in any order
    rng, held = np.random.default_rng(seed), []
    for _ in range(40):
        held.append(np.ones(int(rng.integers(8, 16)) << 20, np.uint8))
        if len(held) > 3:
            held.pop(int(rng.integers(0, len(held))))
threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
[t.start() for t in threads]
[t.join() for t in threads]
print((rss_bytes(os.getpid()) - base) / 1e6)
"""


def test_freed_photo_buffers_go_back_to_the_system():
    """Six threads freeing photo-sized buffers: glibc's default kept ~80 MB of them here; given back, a few MB."""
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", FREED_BUFFERS, "give"], cwd=root, capture_output=True, text=True,
                         check=True, env={"PYTHONPATH": str(root)})
    assert float(out.stdout) < 20
