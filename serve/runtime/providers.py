"""Pick ONNX Runtime execution providers by the hardware a replica really has.

ONNX Runtime lists CUDA and TensorRT even where no GPU exists and then silently falls back to the
CPU, so we decide from the GPUs Ray assigned to the replica and check the session afterwards.
"""
from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

CPU, CUDA, TENSORRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


@dataclass(frozen=True)
class ProviderPlan:
    providers: list[tuple[str, dict]] = field(default_factory=list)
    intra_op_threads: int = 1
    half_precision_model: bool = False  # CUDA runs fp16 only if the graph itself is converted

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.providers]

    @property
    def uses_gpu(self) -> bool:
        return self.names[0] != CPU


def tensorrt_libraries_present() -> bool:
    for lib in ("libnvinfer.so.10", "libnvinfer.so"):
        try:
            ctypes.CDLL(lib)
            return True
        except OSError:
            continue
    return False


def plan_providers(
    requested: str,
    gpu_ids: list[int] | list[str],
    num_cpus: float,
    available: list[str],
    precision: str = "fp32",
    tensorrt_present: bool = False,
) -> ProviderPlan:
    """Order TensorRT, CUDA, CPU, keeping only what this replica can really use."""
    threads = max(1, int(num_cpus))
    has_gpu = bool(gpu_ids) and CUDA in available
    if requested in ("cuda", "tensorrt") and not has_gpu:
        raise RuntimeError(f"providers={requested!r} needs a GPU assigned to the replica (num_gpus > 0) and onnxruntime-gpu")
    if requested == "tensorrt" and not (TENSORRT in available and tensorrt_present):
        raise RuntimeError("providers='tensorrt' needs TensorRT libraries (libnvinfer) on the node")
    if precision == "fp16" and not has_gpu:
        raise RuntimeError("precision='fp16' runs only on a GPU; use fp32 on CPU replicas")
    chain: list[tuple[str, dict]] = []
    if has_gpu and requested != "cpu":
        device = {"device_id": 0}  # Ray exposes only the assigned GPUs, renumbered from 0
        if requested in ("auto", "tensorrt") and TENSORRT in available and tensorrt_present:
            chain.append((TENSORRT, {**device, "trt_fp16_enable": precision == "fp16", "trt_engine_cache_enable": True}))
        chain.append((CUDA, device))
    chain.append((CPU, {}))
    return ProviderPlan(chain, threads, half_precision_model=precision == "fp16" and chain[0][0] == CUDA)


def check_session_providers(plan: ProviderPlan, actual: list[str], requested: str) -> None:
    """A silent fallback to CPU is an error when the user asked for a GPU provider."""
    if actual[0] != plan.names[0]:
        message = f"ONNX Runtime fell back from {plan.names[0]} to {actual[0]}"
        if requested in ("cuda", "tensorrt"):
            raise RuntimeError(message)
        log.warning(message)
