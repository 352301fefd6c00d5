"""SIGTERM drains every Ingress replica, not only the one a handle call would reach: with two replicas and
predictions held in their write buffers (a long flush interval, answers not durable), every answered prediction
is in the store once the server has stopped."""
from __future__ import annotations

import sqlite3

import httpx

from loadtests.photos import digit_pngs
from loadtests.cpu import CpuMeter
from tests.conftest import LiveServer, default_config, free_port

REQUESTS = 240  # at 60 each replica spent exactly the 0.2 CPU-s floor below, answering or not


def test_sigterm_writes_every_ingress_replicas_buffer(tmp_path):
    config = default_config(free_port())
    config["ingress"] = {"replicas": 2}
    # Nothing is written before the drain: the buffer waits 120 s or 500 rows, and answers do not wait for it.
    config["feedback"] = {"flush_interval_s": 120, "durable_answers": False}
    server = LiveServer(config, tmp_path)
    server.start()
    try:
        replicas = server.replica_pids("Ingress")
        assert len(replicas) == 2, replicas
        cpu = CpuMeter(replicas)
        pngs = digit_pngs()
        answered = set()
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for i in range(REQUESTS):
                response = client.post("/classify", content=pngs[i % len(pngs)],
                                       headers={"Content-Type": "image/png", "X-User-Id": f"user-{i}"})
                assert response.status_code == 200, response.text
                answered.add(response.json()["request_id"])
        # both replicas answered some (the front door spreads requests); else the test would prove nothing
        spent = cpu.since()
        assert all(seconds > 0.2 for seconds in spent), spent
    finally:
        server.stop()
    assert server.process.returncode == 0, server.log_path.read_text()[-3000:]
    log = server.log_path.read_text()
    assert "drained: {'ingress_replicas': 2" in log, log[-3000:]
    with sqlite3.connect(tmp_path / "feedback.sqlite") as db:
        stored = {row[0] for row in db.execute("SELECT request_id FROM predictions")}
    assert answered - stored == set(), f"{len(answered - stored)} of {len(answered)} answered predictions lost"
