"""cpu-resnet50: the server against in-process ONNX Runtime on the same ResNet-50, real JPEG photos.

Sets itself up: exports a random-weight resnet50 into a git-ignored cache when missing, measures
in-process throughput first (no server running, so nothing competes), then starts the server with
the model and loads it at each concurrency. Targets (this 2-core machine, load generator included):
at concurrency 8 at least 0.90 of the in-process rate with no errors; p50 at concurrency 1 within
15 ms of in-process single-image latency.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from dataclasses import asdict

from tqdm import tqdm

from loadtests.inprocess import BatchFigure, measure, measure_with_decoding, session_for
from loadtests.photos import jpeg_photos
from loadtests.report import plot_bars, plot_load, table, write_results
from loadtests.generator import run_closed
from loadtests.scenarios.common import image_shots, warm_up
from loadtests.scrape import batch_size_buckets, batch_size_distribution
from loadtests.server import ROOT, ServerPool
from serve.runtime.repository import load_artifact

NAME = "cpu-resnet50"
HELP = "server vs in-process ONNX Runtime on ResNet-50 with real JPEG photos"
CACHE = ROOT / ".cache" / "loadtests" / "models"
MODEL, VERSION = "resnet50", "1"
NUM_CPUS = 2  # the whole machine; the load generator shares these cores


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=15, help="seconds per concurrency")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--batches", default="1,4,8,16", help="in-process batch sizes; the best counts")
    parser.add_argument("--preprocess-in", default="replica", choices=["ingress", "replica"])
    parser.add_argument("--replicas", type=int, default=1, help="classifier replicas")
    parser.add_argument("--replica-cpus", type=float, default=NUM_CPUS,
                        help="CPUs (and so ONNX Runtime threads) per replica")


def ensure_model() -> None:
    if (CACHE / MODEL / VERSION / "model.onnx").exists():
        return
    subprocess.run([sys.executable, "-m", "resfam", "export", MODEL, "--pretrained", "random", "--name", MODEL,
                    "--version", VERSION, "--out", str(CACHE), "--force"], cwd=ROOT, check=True)


class InProcess:
    """The same model in this process, with the session set-up a replica uses."""

    def __init__(self, photos: list[bytes]) -> None:
        artifact = load_artifact(CACHE, MODEL, VERSION)
        self.model = session_for(artifact, "cpu", NUM_CPUS, [])
        self.preprocessing = artifact.preprocessing
        self.photos = photos

    def round(self, batches: list[int], seconds: float = 3.0) -> list[BatchFigure]:
        """Throughput per batch size (batch 1 always included: its latency is the single-image reference)."""
        return [measure(self.model, self.preprocessing.input_shape, b, seconds) for b in sorted({1, *batches})]

    def with_decoding(self, in_flight: int, seconds: float = 3.0) -> float:
        """Images/s when the same photos the server gets are decoded here too: a server's ceiling if HTTP and
        Ray Serve cost nothing."""
        return measure_with_decoding(self.model, self.preprocessing, self.photos, seconds, in_flight)


def best_of(*rounds: list[BatchFigure]) -> dict:
    """Per batch size the better of the rounds: on a shared machine the ceiling must not be understated."""
    figures = [max(same, key=lambda f: f.images_per_s) for same in zip(*rounds)]
    single = next(f for f in figures if f.batch == 1)
    return {"figures": [asdict(f) for f in figures], "images_per_s": max(f.images_per_s for f in figures),
            "single_image_ms": single.latency_ms}


def server_config(preprocess_in: str, replicas: int = 1, replica_cpus: float = NUM_CPUS) -> dict:
    """No batch wait: the replica's batcher takes whatever queued while it was busy, so under load batches
    form anyway, and at concurrency 1 a wait would only add its whole length to every request."""
    return {
        "model_repository": str(CACHE), "default_model": MODEL, "http": {"proxy": "haproxy"},
        "models": [{"name": MODEL, "version": VERSION, "replicas": replicas, "num_cpus": replica_cpus, "max_batch_size": 16,
                    "batch_wait_timeout_s": 0.0, "max_queued_requests": 256, "preprocess_in": preprocess_in}],
    }


def run(args: argparse.Namespace, pool: ServerPool) -> dict:
    ensure_model()
    pool.close()  # nothing else may compete with the in-process measurement
    load_before = os.getloadavg()
    batch_sizes = [int(b) for b in args.batches.split(",")]
    photos = jpeg_photos()
    local = InProcess(photos)
    first_round = local.round(batch_sizes)
    decoding_before = local.with_decoding(8)
    best_batch = max(first_round, key=lambda f: f.images_per_s).batch
    server = pool.get(server_config(args.preprocess_in, args.replicas, args.replica_cpus))
    make = image_shots(photos, "image/jpeg")
    warm_up(server.url, make, seconds=5)
    before = batch_size_buckets(server.url)
    runs = []
    for level in tqdm([int(c) for c in args.concurrency.split(",")], desc=NAME, unit="level"):
        # Other work on a shared machine comes and goes: each level also gets an in-process figure taken
        # just before it, with the server idle, so the ratio compares like with like.
        adjacent = best_of(local.round([best_batch], 2.0))
        decoding = local.with_decoding(level)
        r = run_closed(server.url, make, level, args.duration).summary()
        runs.append({**r, "concurrency": level, "inprocess_adjacent_images_per_s": adjacent["images_per_s"],
                     "inprocess_adjacent_single_ms": adjacent["single_image_ms"],
                     "ratio_to_adjacent": r["images_per_s"] / adjacent["images_per_s"],
                     "with_decoding_adjacent_images_per_s": decoding,
                     "ratio_to_with_decoding": r["images_per_s"] / decoding})
    batches = batch_size_distribution(before, batch_size_buckets(server.url))
    rss = server.rss_mb()
    load_after = os.getloadavg()
    pool.close()
    ref = best_of(first_round, local.round(batch_sizes))  # measured again once the server is gone
    with_decoding = max(decoding_before, local.with_decoding(8))
    for r in runs:
        r["ratio_to_inprocess"] = r["images_per_s"] / ref["images_per_s"]
    results = {
        "model": f"{MODEL}/{VERSION} (random weights)", "preprocess_in": args.preprocess_in,
        "inprocess_images_per_s": ref["images_per_s"], "inprocess_single_image_ms": ref["single_image_ms"],
        "inprocess": ref["figures"], "inprocess_with_decoding_images_per_s": with_decoding,
        "with_decoding_ratio": with_decoding / ref["images_per_s"], "runs": runs, "server_rss_mb": rss, "batch_sizes": batches,
        "targets": targets(runs),
        "machine_load_average": {"before": load_before, "after": load_after},  # other work on the same cores
    }
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    plots = [plot_load(out, "throughput_latency.png", runs, "concurrency", f"{NAME} (preprocess in {args.preprocess_in})",
                       reference=ref["images_per_s"], reference_label="in-process best"),
             plot_bars(out, "batch_sizes.png", {"batches": {k: float(v) for k, v in batches.items()}},
                       "batch size (bucket upper bound)", "batches", "executed batch sizes (from /metrics)")]
    write_results(out, results, markdown(results, plots))
    t = results["targets"]
    return {"scenario": NAME, "figure": f"c=8: {t['ratio_at_8']:.2f} of adjacent in-process "
            f"(best {ref['images_per_s']:.1f} img/s; with decoding {with_decoding:.1f}); c=1 p50 {t['p50_gap_ms_at_1']:+.1f} ms"
            + (" (inconclusive: shared machine)" if contended(results) else ""),
            "ok": None if contended(results) else t["met"]}


def targets(runs: list[dict]) -> dict:
    """Against the in-process figures taken next to each level (see run)."""
    by_level = {r["level"]: r for r in runs}
    at8, at1 = by_level.get(8), by_level.get(1)
    ratio = at8["ratio_to_adjacent"] if at8 else float("nan")
    gap = at1["p50_ms"] - at1["inprocess_adjacent_single_ms"] if at1 else float("nan")
    met = bool(at8 and at1 and ratio >= 0.90 and at8["errors"] == 0 and gap <= 15)
    return {"ratio_at_8": ratio, "errors_at_8": at8["errors"] if at8 else None, "p50_gap_ms_at_1": gap, "met": met}


def contended(results: dict) -> bool:
    """Other work held the cores when the run began (1-minute load average above cores + 1); the figure
    after the run also counts this run's own server and load generator, so it cannot tell."""
    return results["machine_load_average"]["before"][0] > (os.cpu_count() or 1) + 1


def _load(results: dict, when: str) -> str:
    return "/".join(f"{v:.1f}" for v in results["machine_load_average"][when])


def _verdict_note(results: dict) -> str:
    if not contended(results):
        return ""
    return (f"\n\n**Inconclusive on this run**: the machine's load average was {_load(results, 'before')} when it "
            f"began, on {os.cpu_count()} cores, so the in-process ceiling itself moved (see the adjacent figures); "
            f"the ratios above do not judge the targets.")


def markdown(results: dict, plots: list[str]) -> str:
    t = results["targets"]
    inproc = table(results["inprocess"], ["batch", "images_per_s", "latency_ms"])
    runs = table(results["runs"], ["concurrency", "images_per_s", "inprocess_adjacent_images_per_s",
                                   "ratio_to_adjacent", "ratio_to_inprocess", "with_decoding_adjacent_images_per_s",
                                   "ratio_to_with_decoding", "p50_ms",
                                   "inprocess_adjacent_single_ms", "p95_ms", "p99_ms", "errors"])
    return f"""# {NAME}

Model {results['model']}, CPU, num_cpus={NUM_CPUS}; preprocessing in the **{results['preprocess_in']}**.
Real photos (scikit-image/scikit-learn) as 500x375 JPEGs; closed loop; the load generator shares the 2 cores.

## In-process ONNX Runtime (no HTTP, no decoding)

Measured before the server starts and again after it stops; per batch size the better round counts.

{inproc}

Best: **{results['inprocess_images_per_s']:.1f} images/s**; single image {results['inprocess_single_image_ms']:.1f} ms.

## In-process with decoding (no HTTP, no Ray Serve)

The same session fed by the same JPEGs, decoded and preprocessed in worker threads of this process, 8 images in
flight, each run taking what is decoded: what a server whose front door and framework cost nothing would reach.
**{results['inprocess_with_decoding_images_per_s']:.1f} images/s = {results['with_decoding_ratio']:.2f} of the in-process best**:
the share of the two cores that decoding alone takes from inference. Per level below,
`with_decoding_adjacent_*` is the same figure taken next to it with `in_flight` = the concurrency.

## Server

`inprocess_adjacent_*`: in-process figures (batch 1 and the best batch) taken just before each level with the
server idle; the targets use them, because other work on a shared machine changes the ceiling minute by minute.

{runs}

Machine load average (1/5/15 min) before {_load(results, 'before')}, after {_load(results, 'after')}
(anything above 2 means other work shared the 2 cores during the run).

Server RSS (whole process tree): {results['server_rss_mb']:.0f} MB. Executed batch sizes: {results['batch_sizes']}

## Targets

- concurrency 8: {t['ratio_at_8']:.2f} of the adjacent in-process rate (target ≥ 0.90), errors {t['errors_at_8']}
- concurrency 1: p50 − adjacent in-process single-image latency = {t['p50_gap_ms_at_1']:.1f} ms (target ≤ 15 ms)
- met: **{t['met']}**{_verdict_note(results)}

{chr(10).join(f'![{p}]({p})' for p in plots)}
"""
