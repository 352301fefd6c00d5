"""Top-1 accuracy of an exported model (ONNX Runtime) or a training checkpoint (PyTorch) on a data split.

Both read pixels through serve.runtime.preprocess with the preprocessing recorded beside the model, so the
number is what a client of the server would see.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from resfam.data import LabelledImages, load_dataset, preprocess_all, preprocessing
from resfam.export import CARD_FILE, MODEL_FILE
from resfam.train import load_trained
from serve.runtime.preprocess import Preprocessing

Predictor = Callable[[np.ndarray], np.ndarray]  # (N, C, H, W) float32 -> (N, classes) logits


@dataclass(frozen=True)
class Accuracy:
    """Top-1 as a fraction in [0, 1], like every *_top1 in run.json and model.json."""

    correct: int
    total: int

    @property
    def top1(self) -> float:
        return self.correct / self.total

    def __str__(self) -> str:
        return f"{self.top1:.2%} ({self.correct}/{self.total})"


def accuracy(
    predict: Predictor, model_labels: Sequence[str], spec: Preprocessing, data: LabelledImages, batch_size: int = 256
) -> Accuracy:
    """Matches classes by label name, so a model and a data set need not order their classes alike."""
    index = {label: i for i, label in enumerate(model_labels)}
    unknown = sorted(set(data.labels) - set(index))
    if unknown:
        raise ValueError(f"the model does not know the data set's classes {unknown[:10]}")
    inputs, targets = preprocess_all(data, spec)
    expected = np.asarray([index[data.labels[t]] for t in targets])
    predicted = np.concatenate(
        [predict(inputs[start : start + batch_size]).argmax(1) for start in range(0, len(inputs), batch_size)]
    )
    return Accuracy(int((predicted == expected).sum()), len(expected))


def onnx_predictor(path: str | Path) -> Predictor:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {input_name: batch})[0]


def torch_predictor(model: nn.Module) -> Predictor:
    model.eval()

    @torch.no_grad()
    def predict(batch: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(batch)).numpy()

    return predict


def resolve_model_dir(path: str | Path) -> Path:
    """A version folder as is; a model's folder means its highest version."""
    path = Path(path)
    if (path / CARD_FILE).is_file():
        return path
    versions = sorted((p for p in path.iterdir() if (p / CARD_FILE).is_file()), key=_version_key) if path.is_dir() else []
    if not versions:
        raise FileNotFoundError(f"{path} holds no {CARD_FILE}; pass models/<name>/<version> or a checkpoint file")
    return versions[-1]


def _version_key(path: Path) -> tuple[int, int | str]:
    return (1, int(path.name)) if path.name.isdigit() else (0, path.name)


def evaluate(target: str | Path, dataset: str | Path, split: str = "test") -> Accuracy:
    """`target` is a model repository folder (ONNX) or a checkpoint with run.json beside it (PyTorch)."""
    target = Path(target)
    data = load_dataset(dataset, split)
    if target.is_file():
        model, run = load_trained(target)
        return accuracy(torch_predictor(model), run["labels"], preprocessing(model.data_config), data)
    model_dir = resolve_model_dir(target)
    card = json.loads((model_dir / CARD_FILE).read_text())
    return accuracy(onnx_predictor(model_dir / MODEL_FILE), card["labels"], Preprocessing.from_metadata(card), data)
