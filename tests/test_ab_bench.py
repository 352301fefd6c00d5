"""Benchmark: reweight the live experiment under load; print dropped requests, latency and users moved.

Run: .venv/bin/python -m pytest tests/test_ab_bench.py -m bench -s
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from serve.ab.stats import percentile
from tests.conftest import shipped_server
from tests.images import photo_bytes
from tests.test_ab_server import PNG, RX, SE, experiment_config

pytestmark = [pytest.mark.bench, pytest.mark.integration]
USERS = [f"user-{i}" for i in range(2000)]


def arms_of(url: str, users: list[str]) -> dict[str, str]:
    def arm(user: str) -> str:
        r = httpx.post(f"{url}/classify", content=photo_bytes(), params={"k": 1}, headers={**PNG, "X-User-Id": user},
                       timeout=60)
        r.raise_for_status()
        return r.json()["arm"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(zip(users, pool.map(arm, users)))


def test_reweight_under_load(tmp_path_factory):
    with shipped_server(tmp_path_factory, "ab-bench") as live:
        before = arms_of(live.url, USERS)
        samples: list[tuple[float, int, float]] = []  # (sent at, status, latency)
        stop = threading.Event()

        def load(worker: int) -> None:
            with httpx.Client(base_url=live.url, timeout=60) as c:
                i = worker
                while not stop.is_set():
                    sent = time.perf_counter()
                    r = c.post("/classify", content=photo_bytes(), headers={**PNG, "X-User-Id": USERS[i % 2000]})
                    samples.append((sent, r.status_code, time.perf_counter() - sent))
                    i += 4

        threads = [threading.Thread(target=load, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        time.sleep(5)
        reload_started = time.perf_counter()
        live.reload(experiment_config(live, arms=[{"model": SE, "weight": 60}, {"model": RX, "weight": 40}]))
        reload_s = time.perf_counter() - reload_started
        time.sleep(5)
        stop.set()
        for t in threads:
            t.join()
        after = arms_of(live.url, USERS)

    during = [lat for sent, _, lat in samples if reload_started <= sent <= reload_started + reload_s]
    steady = [lat for sent, _, lat in samples if sent < reload_started]
    failed = sum(status != 200 for _, status, _ in samples)
    moved = [u for u in USERS if before[u] != after[u]]
    print(f"\nreweight 50/50 -> 60/40 under load (4 clients): {len(samples)} requests, {failed} failed; "
          f"SIGHUP to deployed in {reload_s:.2f} s")
    print(f"latency p50/p99 before: {1000 * percentile(steady, 50):.1f}/{1000 * percentile(steady, 99):.1f} ms; "
          f"during the reload ({len(during)} requests): "
          f"{1000 * percentile(during, 50):.1f}/{1000 * percentile(during, 99):.1f} ms" if during else "")
    print(f"users on {SE}: {sum(a == SE for a in before.values())}/2000 before, {sum(a == SE for a in after.values())}/2000 after; "
          f"moved {len(moved)} ({len(moved) / 20:.2f}%), all to {SE}: {all(after[u] == SE for u in moved)}")
    assert failed == 0
