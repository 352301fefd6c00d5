"""Guarded rollouts against a live server: a model repository with a good and a bad challenger, the config that
rolls one out, and a driver that sends digits with their true labels as feedback while it watches the rollout.

Shared by tests/test_rollout_server.py and `python -m loadtests rollout`."""
from __future__ import annotations

import json
import random
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sklearn.datasets import load_digits

from loadtests.photos import digit_pngs
from loadtests.server import ROOT, default_config

BASELINE = "seresnet20_digits"
TWIN = f"{BASELINE}_twin"  # the baseline's weights under another name: as good as the baseline
ROTATED = f"{BASELINE}_rotated"  # the same weights with every label moved one class on: wrong almost always
PLAN = {"steps": [10, 50, 100], "min_step_s": 5, "min_feedback": 20, "accuracy_margin": 0.05,
        "max_p95_latency_ratio": 3.0, "decide_every_s": 1.0}


def rollout_repository(root: Path) -> Path:
    """The baseline, its twin and its rotated copy (model.json's labels shifted by one) under `root`."""
    source = ROOT / "models" / BASELINE
    (version,) = [p.name for p in source.iterdir() if p.is_dir()]
    for name, shift in ((BASELINE, 0), (TWIN, 0), (ROTATED, 1)):
        target = root / name / version
        shutil.copytree(source / version, target, dirs_exist_ok=True)
        meta = json.loads((target / "model.json").read_text())
        meta["name"] = name
        meta["labels"] = meta["labels"][shift:] + meta["labels"][:shift]
        (target / "model.json").write_text(json.dumps(meta, indent=2))
    return root


def rollout_experiment(name: str, challenger: str, **plan: float) -> dict:
    return {"enabled": True, "name": name, "mode": "split", "sticky_header": "X-User-Id",
            "arms": [{"model": BASELINE, "weight": 50}, {"model": challenger, "weight": 50}],
            "rollout": {"challenger": challenger, **PLAN, **plan}}


def rollout_config(repository: Path, experiment: dict, ingress_replicas: int = 2) -> dict:
    """Three copies of one small model on 2 cores (half a CPU each), and two ingress replicas deciding at once."""
    config = default_config(0)
    config["model_repository"] = str(repository)
    template = next(m for m in config["models"] if m["name"] == BASELINE)
    config["models"] = [{**template, "name": name, "num_cpus": 0.5} for name in (BASELINE, TWIN, ROTATED)]
    config["default_model"] = BASELINE
    config["ingress"] = {"replicas": ingress_replicas}
    config["experiment"] = experiment
    return config


@dataclass
class RolloutRun:
    """What the clients saw (one row per classify) and what the report said (one row per look)."""

    started: float = field(default_factory=time.time)
    answers: list[tuple[float, int, str | None, bool, float]] = field(default_factory=list)  # t, status, arm, ok, s
    looks: list[tuple[float, float, str]] = field(default_factory=list)  # t, challenger weight, status
    report: dict = field(default_factory=dict)

    @property
    def rollout(self) -> dict:
        return self.report.get("rollout") or {}


def drive_rollout(url: str, timeout_s: float = 150, clients: int = 4, tail_s: float = 3.0,
                  look_every_s: float = 0.5) -> RolloutRun:
    """Load and feedback (true labels, by name) until the rollout concludes and `tail_s` more, or timeout."""
    images = digit_pngs(256)
    targets = load_digits().target[:len(images)]
    run = RolloutRun()
    stop = threading.Event()
    lock = threading.Lock()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=url, timeout=60) as http:
            while not stop.is_set():
                i = rng.randrange(len(images))
                sent = time.perf_counter()
                r = http.post("/classify", content=images[i], headers={
                    "Content-Type": "image/png", "X-User-Id": f"user-{rng.randrange(10**6)}"})
                took = time.perf_counter() - sent
                if r.status_code != 200:
                    with lock:
                        run.answers.append((time.time(), r.status_code, None, False, took))
                    continue
                body = r.json()
                ok = body["predictions"][0]["label"] == str(targets[i])
                with lock:
                    run.answers.append((time.time(), 200, body["arm"], ok, took))
                http.post("/feedback", json={"request_id": body["request_id"], "label": str(targets[i])})

    threads = [threading.Thread(target=client, args=(seed,), daemon=True) for seed in range(clients)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout_s
    concluded: float | None = None
    try:
        with httpx.Client(base_url=url, timeout=60) as http:
            while time.monotonic() < deadline and (concluded is None or time.monotonic() < concluded + tail_s):
                report = http.get("/ab/report")
                if report.status_code == 200:
                    run.report = report.json()
                    rollout = run.rollout
                    run.looks.append((time.time(), rollout.get("challenger_weight", 0.0), rollout.get("status", "")))
                    if concluded is None and rollout.get("status") in ("completed", "rolled_back"):
                        concluded = time.monotonic()
                time.sleep(look_every_s)
    finally:
        stop.set()
        for t in threads:
            t.join()
    return run
