"""The `resfam` command end to end: list, train -> export -> eval on a real (small) data set."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from resfam import create_model
from resfam.cli import main
from resfam.data import digits
from resfam.export import read_metadata
from tests.conftest import ROOT


def test_python_dash_m_runs_the_cli():
    done = subprocess.run([sys.executable, "-m", "resfam", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0
    for command in ("list", "train", "export", "eval"):
        assert command in done.stdout


def test_list_shows_the_table(capsys):
    assert main(["list", "--family", "resnet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "family", "params", "input", "top-1"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["resnet50"][1:] == ["resnet", "25.56M", "3x224x224", "76.13"]
    assert rows["resnet20"][2:] == ["0.27M", "3x32x32", "-"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    train_digits = digits("train")
    keep = [i for i, t in enumerate(train_digits.targets) if t in (3, 8)]
    return train_digits.subset(keep).save_image_folder(tmp_path_factory.mktemp("digits38"))


def test_train_export_eval(folder, tmp_path, capsys):
    run_dir, repo = tmp_path / "runs" / "r", tmp_path / "models"
    assert main(["train", "resnet20", "--dataset", str(folder), "--epochs", "3", "--batch-size", "32",
                 "--lr", "0.05", "--in-chans", "1", "--threads", "1", "--out", str(run_dir)]) == 0
    run = json.loads((run_dir / "run.json").read_text())
    assert "test top-1" in capsys.readouterr().out

    assert main(["export", "resnet20", "--checkpoint", str(run_dir / "best.pt"), "--name", "r38", "--version", "2",
                 "--out", str(repo)]) == 0
    out = capsys.readouterr().out
    assert "max |ONNX - PyTorch| = " in out and "ONNX test top-1" in out
    card = json.loads((repo / "r38" / "2" / "model.json").read_text())
    assert card["labels"] == ["3", "8"] and card["channels"] == 1 and card["dataset"] == folder.name
    assert card["metrics"]["val_top1"] == run["val_top1"]
    assert card["metrics"]["test_correct"] == run["test_correct"]  # the ONNX file scores as PyTorch did
    assert card["provenance"]["source"] == "resfam train"
    assert card["provenance"]["command"] == run["provenance"]["command"]
    assert card["provenance"]["export_command"].startswith("resfam export resnet20 --checkpoint ")
    assert card["provenance"]["run_dir"] == str(run_dir)

    assert main(["eval", str(repo / "r38"), "--dataset", str(folder)]) == 0
    assert f"({card['metrics']['test_correct']}/{card['metrics']['test_samples']})" in capsys.readouterr().out


def test_export_random_weights(tmp_path, capsys):
    assert main(["export", "resnet20", "--pretrained", "random", "--num-classes", "4", "--name", "rand",
                 "--out", str(tmp_path)]) == 0
    card = json.loads((tmp_path / "rand" / "1" / "model.json").read_text())
    assert card["labels"] == ["class_0", "class_1", "class_2", "class_3"] and card["metrics"] == {}
    assert card["provenance"]["source"] == "random" and card["provenance"]["seed"] == 0
    assert json.loads(read_metadata(tmp_path / "rand" / "1" / "model.onnx")["labels"]) == card["labels"]
    with pytest.raises(FileExistsError):
        main(["export", "resnet20", "--pretrained", "random", "--num-classes", "4", "--name", "rand",
              "--out", str(tmp_path)])
    assert main(["export", "resnet20", "--pretrained", "random", "--num-classes", "4", "--name", "rand",
                 "--out", str(tmp_path), "--force"]) == 0


def test_export_local_weights(tmp_path, capsys):
    torch.manual_seed(1)
    weights = tmp_path / "w.pt"
    torch.save(create_model("resnet20").state_dict(), weights)
    assert main(["export", "resnet20", "--pretrained", str(weights), "--name", "local", "--out", str(tmp_path)]) == 0
    card = json.loads((tmp_path / "local" / "1" / "model.json").read_text())
    assert card["provenance"]["source"] == "checkpoint" and card["provenance"]["weights"] == str(weights)
    assert card["input_size"] == [3, 32, 32] and card["labels"][:2] == ["class_0", "class_1"]


def test_export_refuses_a_checkpoint_of_another_arch(folder, tmp_path):
    run_dir = tmp_path / "run"
    main(["train", "resnet20", "--dataset", str(folder), "--epochs", "1", "--in-chans", "1", "--threads", "1",
          "--out", str(run_dir)])
    with pytest.raises(SystemExit, match="trained as resnet20"):
        main(["export", "seresnet20", "--checkpoint", str(run_dir / "best.pt"), "--name", "x", "--out", str(tmp_path)])
