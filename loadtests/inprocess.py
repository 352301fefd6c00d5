"""In-process ONNX Runtime throughput: the ceilings a server's figures are compared with.

`measure`: no HTTP, no decoding; the same session set-up a classifier replica uses, fed random tensors.
`measure_with_decoding`: the same session fed by JPEG decoding in worker threads, as a replica is, still
without HTTP or a serving framework: what a server whose front door cost nothing could reach.
"""
from __future__ import annotations

import argparse
import collections
import itertools
import json
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from serve.runtime.inference import OnnxClassifier, create_session
from serve.runtime.preprocess import Preprocessing, decode_and_preprocess
from serve.runtime.providers import plan_providers, tensorrt_libraries_present
from serve.runtime.repository import ModelArtifact, load_artifact

NO_PIXEL_LIMIT = 1 << 40  # the benchmark's own photos


@dataclass(frozen=True)
class BatchFigure:
    batch: int
    images_per_s: float
    latency_ms: float  # per batch, median


def session_for(artifact: ModelArtifact, providers: str, num_cpus: float, gpu_ids: list[int],
                precision: str = "fp32") -> OnnxClassifier:
    plan = plan_providers(providers, gpu_ids, num_cpus, ort.get_available_providers(), precision,
                          tensorrt_libraries_present())
    # ONNX Runtime's defaults (threads spin): the in-process figure is the best the model does alone.
    return OnnxClassifier(create_session(str(artifact.onnx_path), plan, providers, spin_wait=True))


def measure(model: OnnxClassifier, input_shape: tuple[int, ...], batch: int, seconds: float) -> BatchFigure:
    """Median batch latency over `seconds` after a warm-up; throughput from the total."""
    data = np.random.default_rng(0).standard_normal((batch, *input_shape)).astype(np.float32)
    for _ in range(3):
        model.predict(data)
    latencies = []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds or len(latencies) < 5:
        t0 = time.perf_counter()
        model.predict(data)
        latencies.append(time.perf_counter() - t0)
    return BatchFigure(batch, batch * len(latencies) / sum(latencies), 1000 * float(np.median(latencies)))


def measure_with_decoding(model: OnnxClassifier, spec: Preprocessing, photos: list[bytes], seconds: float,
                          in_flight: int = 8, max_batch_size: int = 16, decode_threads: int = 4) -> float:
    """Images/s with `in_flight` images always outstanding: each is decoded in a worker thread, and every run
    takes the oldest image and whatever else has been decoded by then (up to `max_batch_size`), as the
    replica's batcher does."""
    with ThreadPoolExecutor(decode_threads, thread_name_prefix="decode") as pool:
        next_photo = itertools.cycle(photos).__next__

        def decode_one() -> Future:
            return pool.submit(decode_and_preprocess, next_photo(), spec, NO_PIXEL_LIMIT)

        pending = collections.deque(decode_one() for _ in range(in_flight))
        done, started, warm = 0, time.perf_counter(), False
        while time.perf_counter() - started < seconds:
            batch = [pending.popleft().result()]
            while len(batch) < max_batch_size and pending and pending[0].done():
                batch.append(pending.popleft().result())
            model.predict(np.stack(batch))
            pending.extend(decode_one() for _ in batch)
            if not warm:  # the first run pays one-time costs
                done, started, warm = 0, time.perf_counter(), True
                continue
            done += len(batch)
        return done / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.inprocess", description=__doc__)
    parser.add_argument("model_dir", help="models/<name>/<version>")
    parser.add_argument("--providers", default="auto", choices=["auto", "cpu", "cuda", "tensorrt"])
    parser.add_argument("--num-cpus", type=float, default=2)
    parser.add_argument("--gpu", action="store_true", help="use GPU 0 (as a replica with num_gpus=1 would)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16"])
    parser.add_argument("--batches", default="1,4,8,16")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    path = Path(args.model_dir)
    artifact = load_artifact(path.parent.parent, path.parent.name, path.name)
    model = session_for(artifact, args.providers, args.num_cpus, [0] if args.gpu else [], args.precision)
    shape = artifact.preprocessing.input_shape
    figures = [measure(model, shape, int(b), args.seconds) for b in args.batches.split(",")]
    result = {"model": artifact.key, "providers": model.session.get_providers(), "precision": args.precision,
              "figures": [asdict(f) for f in figures], "best_images_per_s": max(f.images_per_s for f in figures)}
    for f in figures:
        print(f"{artifact.key} {result['providers'][0]} {args.precision} batch {f.batch:4d}: "
              f"{f.images_per_s:9.1f} images/s, {f.latency_ms:8.2f} ms per batch")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
