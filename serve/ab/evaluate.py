"""`python -m serve.ab.evaluate`: send a labelled dataset through the running server to every arm.

Each image goes to each arm of the server's experiment: through the experiment itself with an
X-User-Id that hashes into the arm (split mode), else by naming the arm's model (bypass). The true
labels are posted to /feedback, so GET /ab/report fills up too. The report (markdown, JSON, PNG
plots of accuracy with 95% intervals and of latency per arm) goes to --out.
"""
from __future__ import annotations

import argparse
import io
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from serve.ab.datasets import LabelledImages, load_dataset
from serve.ab.experiment import Arm, sticky_arm


@dataclass
class ArmRun:
    """What one arm answered for every image, in dataset order."""

    arm: str
    route: str  # "sticky user <id>" or "model=<name>"
    predicted: list[int] = field(default_factory=list)
    confidence: list[float] = field(default_factory=list)
    latency_s: list[float] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m serve.ab.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--dataset", default="digits", help='"digits" (its test split) or an ImageFolder path')
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--limit", type=int, default=None, help="send only the first N images")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--no-feedback", action="store_true", help="do not post the true labels to /feedback")
    parser.add_argument("--out", required=True, help="folder for report.md, report.json and the plots")
    return parser.parse_args(argv)


def encoded(data: LabelledImages, index: int) -> bytes:
    """Files go as they are on disk; in-memory images (digits) as PNG."""
    item = data.items[index]
    if isinstance(item, Path):
        return item.read_bytes()
    buffer = io.BytesIO()
    item.save(buffer, format="PNG")
    return buffer.getvalue()


def routes(experiment: dict) -> dict[str, dict]:
    """Per arm, how to reach it: a sticky user the experiment sends there, or the arm's model by name."""
    arms = [Arm(a["arm"], a["weight"]) for a in experiment["arms"]]
    out = {}
    for arm in arms:
        if experiment["enabled"] and experiment["mode"] == "split":
            user = next(f"abeval-{arm.name}-{n}" for n in range(100_000)
                        if sticky_arm(arms, f"abeval-{arm.name}-{n}", experiment["name"]).name == arm.name)
            out[arm.name] = {"headers": {experiment["sticky_header"]: user}, "params": {}, "via": f"sticky user {user}"}
        else:
            out[arm.name] = {"headers": {}, "params": {"model": arm.name}, "via": f"model={arm.name} (bypass)"}
    return out


def run_arm(client: httpx.Client, arm: str, route: dict, payloads: list[bytes], concurrency: int,
            progress) -> ArmRun:
    def send(data: bytes) -> tuple[dict, float]:
        started = time.perf_counter()
        r = client.post("/classify", content=data, params={"k": 1, **route["params"]},
                        headers={"Content-Type": "application/octet-stream", **route["headers"]})
        elapsed = time.perf_counter() - started
        r.raise_for_status()
        return r.json(), elapsed

    result = ArmRun(arm, route["via"])
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for body, elapsed in pool.map(send, payloads):
            if route["params"] == {} and body["arm"] != arm:
                raise RuntimeError(f"the server sent a user meant for {arm} to {body['arm']}: did the experiment change?")
            top = body["predictions"][0]
            result.predicted.append(top["index"])
            result.confidence.append(top["score"])
            result.latency_s.append(elapsed)
            result.request_ids.append(body["request_id"])
            progress.update(1)
    return result


def post_feedback(client: httpx.Client, runs: list[ArmRun], targets: list[int], concurrency: int, progress) -> int:
    jobs = [(rid, t) for run in runs for rid, t in zip(run.request_ids, targets)]

    def send(job: tuple[str, int]) -> bool:
        r = client.post("/feedback", json={"request_id": job[0], "label": job[1]})
        r.raise_for_status()
        progress.update(1)
        return r.json()["counted"]

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return sum(pool.map(send, jobs))


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    from serve.ab.evaluate_report import write_report

    args = parse_args(argv)
    data = load_dataset(args.dataset, args.split)
    count = min(len(data), args.limit) if args.limit else len(data)
    payloads = [encoded(data, i) for i in range(count)]
    targets = list(data.targets[:count])
    with httpx.Client(base_url=args.url, timeout=120) as client:
        experiment = client.get("/ab/report").raise_for_status().json()["experiment"]
        if experiment is None:
            print("error: the server runs no A/B experiment (no `experiment` in its config)", file=sys.stderr)
            return 2
        arm_routes = routes(experiment)
        runs = []
        for arm, route in arm_routes.items():
            with tqdm(total=count, desc=f"{arm} via {route['via']}", unit="img") as bar:
                runs.append(run_arm(client, arm, route, payloads, args.concurrency, bar))
        counted = 0
        if not args.no_feedback:
            with tqdm(total=count * len(runs), desc="feedback", unit="label") as bar:
                counted = post_feedback(client, runs, targets, args.concurrency, bar)
        server_report = client.get("/ab/report").raise_for_status().json()
    out = write_report(Path(args.out), args.dataset, args.split, data.labels, targets, runs, server_report, counted)
    print(f"report: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
