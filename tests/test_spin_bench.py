"""Figures behind `models[].spin_wait` (run with -m bench): ONNX Runtime's threads busy-waiting or sleeping
while another process wants the same cores, as the front door, the ingress and the decoders do.

ResNet-50 (random weights, batch 1, two threads) runs in this process; a neighbour process does 4 ms CPU
bursts with 6 ms pauses (about a request's serving path at 100 requests/s). Spinning on and off alternate so
that both see the same machine.

    .venv/bin/python -m pytest -m bench -s -p no:cacheprovider tests/test_spin_bench.py
"""
from __future__ import annotations

import multiprocessing
import time

import numpy as np
import pytest

from loadtests.scenarios import cpu_resnet50
from serve.runtime.inference import create_session
from serve.runtime.providers import CPU, ProviderPlan

pytestmark = pytest.mark.bench
BURST_S, PAUSE_S, SECONDS, ROUNDS = 0.004, 0.006, 12.0, 2


def neighbour(stop: multiprocessing.synchronize.Event, bursts: multiprocessing.sharedctypes.Synchronized) -> None:
    while not stop.is_set():
        began = time.process_time()
        while time.process_time() - began < BURST_S:
            pass
        bursts.value += 1
        time.sleep(PAUSE_S)


def one_run(spin_wait: bool) -> dict[str, float]:
    model = cpu_resnet50.CACHE / cpu_resnet50.MODEL / cpu_resnet50.VERSION / "model.onnx"
    session = create_session(str(model), ProviderPlan([(CPU, {})], 2), "cpu", spin_wait=spin_wait)
    feed = {session.get_inputs()[0].name: np.random.default_rng(0).random((1, 3, 224, 224), np.float32)}
    for _ in range(3):
        session.run(None, feed)
    stop, bursts = multiprocessing.Event(), multiprocessing.Value("i", 0)
    other = multiprocessing.Process(target=neighbour, args=(stop, bursts))
    other.start()
    began, cpu_began, images = time.monotonic(), time.process_time(), 0
    while time.monotonic() - began < SECONDS:
        session.run(None, feed)
        images += 1
    wall, cpu = time.monotonic() - began, time.process_time() - cpu_began
    stop.set()
    other.join()
    return {"images_per_s": images / wall, "cpu_ms_per_image": 1000 * cpu / images,
            "neighbour_bursts_per_s": bursts.value / wall}


def test_spinning_against_a_neighbour() -> None:
    cpu_resnet50.ensure_model()
    rows = [(spin, one_run(spin)) for _ in range(ROUNDS) for spin in (True, False)]
    print(f"\nResNet-50 batch 1, 2 threads, neighbour {BURST_S * 1000:g} ms bursts / {PAUSE_S * 1000:g} ms pauses "
          f"(ideal {1 / (BURST_S + PAUSE_S):.0f} bursts/s)")
    for spin, figures in rows:
        print(f"spin_wait={spin!s:5}: {figures['images_per_s']:5.1f} images/s, "
              f"{figures['cpu_ms_per_image']:5.0f} CPU-ms/image, neighbour {figures['neighbour_bursts_per_s']:5.1f} bursts/s")
    assert all(f["images_per_s"] > 0 and f["neighbour_bursts_per_s"] > 0 for _, f in rows)
