"""Training on a tiny real data set: loss falls, the best epoch is kept, the record says what was done."""
from __future__ import annotations

import json

import pytest
import torch

from resfam.data import digits, preprocessing
from resfam.evaluate import evaluate
from resfam.train import TrainConfig, load_trained, train


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """The real digits 0, 1 and 7 (about 380) as an ImageFolder."""
    train_digits = digits("train")
    keep = [i for i, t in enumerate(train_digits.targets) if t in (0, 1, 7)]
    return train_digits.subset(keep).save_image_folder(tmp_path_factory.mktemp("tiny"))


def tiny_config(folder, out, **overrides) -> TrainConfig:
    base = dict(arch="resnet20", out=str(out), dataset=str(folder), epochs=4, batch_size=32, lr=0.05, in_chans=1,
                threads=1)
    return TrainConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def tiny_run(tiny_folder, tmp_path_factory):
    cfg = tiny_config(tiny_folder, tmp_path_factory.mktemp("run"))
    return cfg, train(cfg)


def test_loss_falls_and_model_learns(tiny_run):
    _, run = tiny_run
    losses = [row["train_loss"] for row in run["history"]]
    assert losses[-1] < 0.7 * losses[0], losses
    assert run["val_top1"] > 0.5 and len(run["history"]) == 4


def test_checkpoint_and_run_record(tiny_run):
    cfg, run = tiny_run
    out = __import__("pathlib").Path(cfg.out)
    state = torch.load(out / "best.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    on_disk = json.loads((out / "run.json").read_text())
    assert on_disk == json.loads(json.dumps(run))
    assert on_disk["labels"] == ["0", "1", "7"] and on_disk["epochs"] == 4
    assert on_disk["best_epoch"] == max(on_disk["history"], key=lambda r: (r["val_top1"], -r["val_loss"]))["epoch"]
    assert on_disk["data_config"]["input_size"] == [1, 32, 32] and on_disk["data_config"]["channels"] == 1
    prov = on_disk["provenance"]
    assert prov["seed"] == 0 and prov["torch"] == torch.__version__ and prov["created"]
    assert prov["command"].startswith("resfam train resnet20 --out ") and "--epochs 4" in prov["command"]
    assert 0 <= on_disk["test_top1"] <= 1 and on_disk["test_correct"] <= on_disk["test_samples"]


def test_checkpoint_reloads_to_the_recorded_accuracy(tiny_run, tiny_folder):
    cfg, run = tiny_run
    model, _ = load_trained(f"{cfg.out}/best.pt")
    assert preprocessing(model.data_config).input_shape == (1, 32, 32)
    acc = evaluate(f"{cfg.out}/best.pt", tiny_folder, "test")
    assert (acc.correct, acc.total) == (run["test_correct"], run["test_samples"])


def test_same_seed_reproduces_the_run(tiny_folder, tmp_path):
    first = train(tiny_config(tiny_folder, tmp_path / "a", epochs=2))
    second = train(tiny_config(tiny_folder, tmp_path / "b", epochs=2))
    assert [r["train_loss"] for r in first["history"]] == [r["train_loss"] for r in second["history"]]


def test_digits_need_one_channel(tmp_path):
    with pytest.raises(ValueError, match="grayscale"):
        train(TrainConfig(arch="resnet20", out=str(tmp_path), dataset="digits", epochs=1, in_chans=3))
