#!/usr/bin/env bash
# GPU proof on a machine with an NVIDIA GPU and onnxruntime-gpu: export a random-weight resnet50 with
# resfam, then run it through the replica's own provider planning and session code on CPU, CUDA fp32
# and CUDA fp16, and check the GPU answers agree with the CPU's. Figures go to ${OUT:-/tmp}/gpu.
set -euo pipefail
out=${OUT:-/tmp}/gpu
mkdir -p "$out"
py=${PYTHON:-python3}
$py -m resfam export resnet50 --pretrained random --name resnet50 --version 1 --out /tmp/gpu-models --force
$py -m loadtests.inprocess /tmp/gpu-models/resnet50/1 --providers cpu --num-cpus "$(nproc)" \
  --batches 1,8,32 --seconds 3 --json "$out/cpu.json"
$py -m loadtests.inprocess /tmp/gpu-models/resnet50/1 --providers cuda --gpu \
  --batches 1,8,32,64,128 --seconds 3 --json "$out/cuda-fp32.json"
$py -m loadtests.inprocess /tmp/gpu-models/resnet50/1 --providers cuda --gpu --precision fp16 \
  --batches 1,8,32,64,128 --seconds 3 --json "$out/cuda-fp16.json"
$py - <<'PY'
import numpy as np
from loadtests.inprocess import session_for
from serve.runtime.repository import load_artifact
from pathlib import Path
a = load_artifact(Path("/tmp/gpu-models"), "resnet50", "1")
x = np.random.default_rng(1).standard_normal((8, 3, 224, 224)).astype(np.float32)
cpu = session_for(a, "cpu", 8, []).predict(x)
for precision in ("fp32", "fp16"):
    gpu = session_for(a, "cuda", 1, [0], precision).predict(x)
    print(f"CUDA {precision} vs CPU: max |dp| = {np.abs(gpu - cpu).max():.2e}, "
          f"top-1 agreement {np.mean(gpu.argmax(1) == cpu.argmax(1)):.3f}")
PY
