"""ONNX export: dynamic batch, checked numerics, self-describing files; and the shipped default models."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from resfam import create_model
from resfam.data import DIGITS_CONFIG
from resfam.evaluate import evaluate
from resfam.export import ExportMismatch, export_version, read_metadata, sha256_file, to_onnx
from tests.conftest import ROOT

SHIPPED = ["seresnet20_digits", "resnext20_digits"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("seresnet20", num_classes=10, in_chans=1)


def test_round_trip_with_dynamic_batch(model, tmp_path):
    path = tmp_path / "m.onnx"
    report = to_onnx(model, path, input_size=(1, 32, 32), metadata={"note": "hello"})
    assert report.max_abs_diff <= 1e-4 and report.opset == 18 and report.path == path
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"] and [o.name for o in session.get_outputs()] == ["logits"]
    model.eval()
    for batch in (1, 5):
        x = torch.randn(batch, 1, 32, 32)
        (got,) = session.run(None, {"input": x.numpy()})
        with torch.no_grad():
            np.testing.assert_allclose(got, model(x).numpy(), atol=1e-4)
    assert read_metadata(path) == {"note": "hello"}
    assert onnx.load(str(path)).opset_import[0].version == 18


def test_mode_is_restored(model, tmp_path):
    model.train()
    to_onnx(model, tmp_path / "m.onnx", input_size=(1, 32, 32))
    assert model.training
    model.eval()


def test_mismatch_raises_and_leaves_no_file(model, tmp_path):
    """A tolerance no real difference can meet: the check must fire and the file must not appear."""
    path = tmp_path / "m.onnx"
    with pytest.raises(ExportMismatch, match="differs from PyTorch"):
        to_onnx(model, path, input_size=(1, 32, 32), tolerance=-1.0)
    assert list(tmp_path.iterdir()) == []


class _NanHead(torch.nn.Module):
    """Finite input, NaN output (log of a negative number) in PyTorch and in ONNX Runtime alike."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x.flatten(1)[:, :3] * 0 - 1)


def test_nan_output_fails_the_check(tmp_path):
    path = tmp_path / "m.onnx"
    with pytest.raises(ExportMismatch, match="nan"):
        to_onnx(_NanHead(), path, input_size=(1, 4, 4))
    assert not path.exists()


def test_wrong_input_size_fails_without_a_file(model, tmp_path):
    with pytest.raises(RuntimeError):
        to_onnx(model, tmp_path / "m.onnx", input_size=(3, 32, 32))
    assert list(tmp_path.iterdir()) == []


def test_export_version_writes_the_repository_layout(model, tmp_path):
    prov = {"source": "random", "command": "test", "seed": 0}
    card = export_version(model, tmp_path, "tiny", "3", labels=list("0123456789"), data_config=DIGITS_CONFIG,
                          provenance=prov, metrics={"val_top1": 0.5}, measure=lambda p: {"size": p.stat().st_size})
    folder = tmp_path / "tiny" / "3"
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == ["3"]  # no staging left
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.onnx"]
    assert all(p.stat().st_mode & 0o004 for p in (folder, folder / "model.onnx"))  # a server user may read them
    on_disk = json.loads((folder / "model.json").read_text())
    assert on_disk == card and card["sha256"] == sha256_file(folder / "model.onnx")
    assert card["metrics"]["val_top1"] == 0.5 and card["metrics"]["size"] > 0
    assert card["input_size"] == [1, 32, 32] and card["arch"] == "seresnet20" and card["version"] == "3"
    with pytest.raises(FileExistsError):
        export_version(model, tmp_path, "tiny", "3", labels=list("0123456789"), data_config=DIGITS_CONFIG,
                       provenance=prov)


def shipped_dirs() -> list[Path]:
    return [ROOT / "models" / name / "1" for name in SHIPPED]


@pytest.mark.parametrize("folder", shipped_dirs(), ids=SHIPPED)
def test_shipped_model_card_matches_its_onnx(folder):
    card = json.loads((folder / "model.json").read_text())
    assert card["sha256"] == sha256_file(folder / "model.onnx")
    meta = read_metadata(folder / "model.onnx")
    assert json.loads(meta["resfam"]) == {k: v for k, v in card.items() if k != "sha256"}
    assert json.loads(meta["labels"]) == card["labels"] == list("0123456789")
    assert card["name"] == folder.parent.name and card["version"] == "1"
    assert card["input_size"] == [1, 32, 32] and card["export"]["max_abs_diff"] <= card["export"]["tolerance"]
    prov = card["provenance"]
    assert prov["source"] == "resfam train" and prov["seed"] is not None and prov["commit"]
    assert prov["command"].startswith(f"resfam train {card['arch']} ")
    assert (folder / "model.onnx").stat().st_size < 2_000_000


@pytest.mark.parametrize("folder", shipped_dirs(), ids=SHIPPED)
def test_shipped_model_reproduces_its_recorded_accuracy(folder):
    card = json.loads((folder / "model.json").read_text())
    acc = evaluate(folder, "digits", "test")
    assert (acc.correct, acc.total) == (card["metrics"]["test_correct"], card["metrics"]["test_samples"])
    assert acc.top1 == card["metrics"]["test_top1"] >= 0.97
