"""PyTorch -> ONNX with a checked result, and the model repository layout (models/<name>/<version>/).

Exporter: the TorchScript-based one (`dynamo=False`). Measured here (torch 2.14.1, 2 cores, opset 18):
seresnet20 0.15 s vs 3.0 s with dynamo (5.5 s cold), resnext20_4x8d 0.11 s vs 2.5 s, resnet18 2.0 s vs
3.3 s, resnet50 2.1 s vs 6.4 s; ONNX Runtime agreed with PyTorch equally well for both (max abs diff
1e-7 on the CIFAR models, 3e-5 on resnet50) and files were slightly smaller. The family is plain
feed-forward convnets, where dynamo's strengths (control flow, data-dependent shapes) buy nothing,
and every export is checked against PyTorch below whichever exporter made it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from resfam.registry import DataConfig

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
EXPORTER = "torchscript"
MODEL_FILE = "model.onnx"
CARD_FILE = "model.json"


class ExportMismatch(RuntimeError):
    """ONNX Runtime's output differs from PyTorch's by more than the tolerance."""


@dataclass(frozen=True)
class ExportReport:
    path: Path
    max_abs_diff: float
    tolerance: float
    seconds: float
    opset: int
    exporter: str = EXPORTER


def to_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    input_size: tuple[int, int, int],
    opset: int = 18,
    metadata: dict[str, str] | None = None,
    batch: int = 2,
    tolerance: float = 1e-4,
) -> ExportReport:
    """Export with a dynamic batch axis and check it against PyTorch (eval mode) before it appears at `path`.

    The check runs at `batch` and at `batch + 1`, a size the tracer never saw, so a batch size
    frozen into the graph fails here rather than in a server. On failure nothing is left at `path`.
    """
    path = Path(path)
    started = time.perf_counter()
    was_training = model.training
    model.eval()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        example = torch.randn(batch, *input_size, generator=torch.Generator().manual_seed(0))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
            torch.onnx.export(
                model, (example,), str(tmp), dynamo=False, opset_version=opset,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            )
        if metadata:
            embed_metadata(tmp, metadata)
        diff = max_abs_diff(model, tmp, input_size, (batch, batch + 1))
        if not diff <= tolerance:  # also catches NaN
            raise ExportMismatch(f"ONNX Runtime differs from PyTorch by {diff:.3g} (tolerance {tolerance:g})")
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a server may run as another user
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        model.train(was_training)
    return ExportReport(path, diff, tolerance, round(time.perf_counter() - started, 3), opset)


@torch.no_grad()
def max_abs_diff(model: nn.Module, onnx_path: Path, input_size: Sequence[int], batches: Sequence[int]) -> float:
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(1)
    diffs = []
    for n in batches:
        x = torch.randn(n, *input_size, generator=generator)
        got = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
        diffs.append(np.abs(got - model(x).numpy()).max())
    return float(np.max(diffs))  # np.max keeps a NaN; the builtin max would drop it


def embed_metadata(path: Path, metadata: Mapping[str, str]) -> None:
    """Set metadata_props entries (replacing same-named ones); the graph is untouched."""
    proto = onnx.load(str(path))
    kept = [p for p in proto.metadata_props if p.key not in metadata]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))


def read_metadata(path: str | Path) -> dict[str, str]:
    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_card(
    *,
    name: str,
    version: str,
    arch: str,
    labels: Sequence[str],
    data_config: DataConfig,
    metrics: Mapping[str, Any],
    provenance: Mapping[str, Any],
    report: ExportReport,
) -> dict[str, Any]:
    """model.json without its sha256: what a server needs to preprocess, run and label."""
    cfg = data_config.to_dict()
    return {
        "name": name,
        "version": version,
        "arch": arch,
        "num_classes": len(labels),
        "labels": list(labels),
        "input_size": list(cfg["input_size"]),
        "channels": cfg["channels"],
        "resize": cfg["resize"],
        "crop": cfg["crop"],
        "mean": list(cfg["mean"]),
        "std": list(cfg["std"]),
        "interpolation": cfg["interpolation"],
        "dataset": cfg["dataset"],
        "metrics": dict(metrics),
        "provenance": dict(provenance),
        "opset": report.opset,
        "export": {"max_abs_diff": report.max_abs_diff, "tolerance": report.tolerance, "dtype": "float32",
                   "exporter": report.exporter, "seconds": report.seconds},
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
    }


def export_version(
    model: nn.Module,
    repo: str | Path,
    name: str,
    version: str,
    *,
    labels: Sequence[str],
    data_config: DataConfig,
    provenance: Mapping[str, Any],
    metrics: Mapping[str, Any] | None = None,
    measure: Callable[[Path], Mapping[str, Any]] | None = None,
    opset: int = 18,
    tolerance: float = 1e-4,
    force: bool = False,
) -> dict[str, Any]:
    """Write `repo`/name/version/{model.onnx, model.json}; returns model.json's content.

    `measure` scores the checked ONNX file itself (its metrics join `metrics`), so the accuracy
    recorded is the shipped file's. The version is built in a hidden folder beside its final place
    and renamed into it: a failure at any step leaves no half-written version behind.
    """
    target = Path(repo) / name / str(version)
    if target.exists() and not force:
        raise FileExistsError(f"{target} exists; pass force=True (--force) to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".stage-", dir=target.parent))
    try:
        onnx_path = stage / MODEL_FILE
        report = to_onnx(model, onnx_path, input_size=data_config.input_size, opset=opset, tolerance=tolerance)
        measured = {**(metrics or {}), **(measure(onnx_path) if measure else {})}
        card = model_card(name=name, version=str(version), arch=model.arch, labels=labels, data_config=data_config,
                          metrics=measured, provenance=provenance, report=report)
        # The ONNX file carries the card and the labels, so it describes itself without model.json.
        embed_metadata(onnx_path, {"resfam": json.dumps(card), "labels": json.dumps(card["labels"])})
        sealed = {**card, "sha256": sha256_file(onnx_path)}
        (stage / CARD_FILE).write_text(json.dumps(sealed, indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.chmod(stage, 0o755)  # mkdtemp makes it private
        os.replace(stage, target)
        return sealed
    finally:
        shutil.rmtree(stage, ignore_errors=True)
