"""The peers benchmark's arithmetic: process roles and the GPU-feeding figures, from made-up measurements."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from loadtests.scenarios import peers


def test_roles_from_process_names():
    assert peers.role("ServeReplica:resfam:classifier-resnet50") == peers.CLASSIFIER
    assert peers.role("ServeReplica:resfam:Ingress") == "ingress replica"
    assert peers.role("ProxyActor") == "ray proxy"
    assert peers.role("haproxy") == "haproxy"
    assert peers.role("python -m loadtests.plain_server") == "plain server"
    assert peers.role("python dashboard.py") == "other ray processes"


def test_gpu_feeding_adds_the_parts_and_scales_to_cores():
    def row(server, level, **cpu_ms):
        return {"server": server, "level": level, "cpu_ms": cpu_ms}
    rows = [row(peers.RAY, 1, **{"ray proxy": 99.0}),
            row(peers.RAY, 32, **{"ray proxy": 3.0, "ingress replica": 4.0, "controller": 50.0}),
            row(peers.RAY + peers.TENSOR, 32, **{"ray proxy": 5.0, "ingress replica": 6.0})]
    front = [{**row(peers.RAY, 32, **{"ray proxy": 2.0, "ingress replica": 3.0, peers.CLASSIFIER: 3.0,
                                      "raylet/gcs": 9.0}), "ort_cpu_ms_est": 1.0}]
    decode = {"500x375": 2.0, "4032x3024": 20.0, "digits PNG": 0.5}
    got = {r["input"]: r for r in peers.gpu_feeding(rows, front, decode)}
    # request path 2 + 3 (per-second roles left out), replica 3 - 1 - 0.5, then decoding
    assert got["500x375 JPEG"]["cpu_ms_per_image"] == pytest.approx(5 + 1.5 + 2)
    assert got["4032x3024 JPEG (decode: fast)"]["cpu_ms_per_image"] == pytest.approx(5 + 1.5 + 20)
    tensor = got["preprocessed tensor (OIP binary)"]
    assert tensor["request_path_ms"] == pytest.approx(5 + (11 - 7))  # the tensor body's extra on the path
    assert tensor["cpu_ms_per_image"] == pytest.approx(9 + 1.5)
    assert tensor["cores_per_gpu"] == pytest.approx(peers.GPU_IMAGES_PER_S * 10.5 / 1000)
    assert peers.gpu_feeding(rows[:2], front, decode) == []  # no tensor row: nothing to compare


def test_ort_figure_at_a_mean_batch():
    profile = {1: 9.0, 2: 8.0, 4: 6.0, 8: 5.0, 16: 4.0}
    assert peers.ort_ms_at(profile, 0.0) == 9.0
    assert peers.ort_ms_at(profile, 5.3) == 6.0
    assert peers.ort_ms_at(profile, 40) == 4.0


def _state(pid: int) -> str:
    stat = open(f"/proc/{pid}/stat").read()
    return stat[stat.rindex(")") + 2]


def test_pausing_stops_the_processes_off_the_request_path_and_continues_them():
    """A tree like a server's: a root, a process of Ray's own, and one on the path (named as HAProxy is). Inside
    the pause the first two are stopped and the third runs; after it, none is stopped."""
    root = subprocess.Popen(["bash", "-c", "(exec -a haproxy sleep 60) & (exec -a raylet sleep 60) & wait"],
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while len(peers.cpu.snapshot(root.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        names = {name: pid for pid, (name, _) in peers.cpu.snapshot(root.pid).items()}
        assert {"haproxy", "raylet"} <= set(names)
        with peers.paused_off_path(root.pid) as stopped:
            assert set(stopped) == {root.pid, names["raylet"]}
            time.sleep(0.2)  # SIGSTOP takes effect asynchronously
            assert _state(root.pid) == _state(names["raylet"]) == "T"
            assert _state(names["haproxy"]) != "T"
        time.sleep(0.2)
        assert all(_state(pid) != "T" for pid in (root.pid, *names.values()))
    finally:
        os.killpg(root.pid, signal.SIGTERM)
        root.wait(10)
