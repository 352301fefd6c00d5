"""In-process ONNX Runtime throughput: the ceiling a server's figures are compared with.

No HTTP, no decoding: the same session set-up a classifier replica uses, fed random tensors.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from serve.inference import OnnxClassifier, create_session
from serve.providers import plan_providers, tensorrt_libraries_present
from serve.repository import ModelArtifact, load_artifact


@dataclass(frozen=True)
class BatchFigure:
    batch: int
    images_per_s: float
    latency_ms: float  # per batch, median


def session_for(artifact: ModelArtifact, providers: str, num_cpus: float, gpu_ids: list[int],
                precision: str = "fp32") -> OnnxClassifier:
    plan = plan_providers(providers, gpu_ids, num_cpus, ort.get_available_providers(), precision,
                          tensorrt_libraries_present())
    return OnnxClassifier(create_session(str(artifact.onnx_path), plan, providers))


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
