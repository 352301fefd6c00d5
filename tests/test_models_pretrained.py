"""pretrained=PATH: a checkpoint loads with strict=True through torch.load(weights_only=True); one that
does not fit fails with the missing and unexpected keys named."""
from __future__ import annotations

import pickle

import pytest
import torch
import torchvision

from resfam import CheckpointMismatch, create_model, list_models
from resfam.factory import TORCHVISION_WEIGHTS
from resfam.registry import get_entry


def same_logits(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


def test_checkpoint_path_round_trip(tmp_path):
    torch.manual_seed(0)
    source = create_model("seresnet20")
    torch.save(source.state_dict(), tmp_path / "plain.pt")
    torch.save({"state_dict": source.state_dict(), "epoch": 3}, tmp_path / "wrapped.pt")
    for path in (tmp_path / "plain.pt", tmp_path / "wrapped.pt"):
        assert same_logits(source, create_model("seresnet20", pretrained=path))


def test_mismatched_checkpoint_names_missing_and_unexpected_keys(tmp_path):
    state = create_model("seresnet20").state_dict()  # SE gates that resnet20 lacks
    del state["fc.bias"]
    torch.save(state, tmp_path / "se.pt")
    with pytest.raises(CheckpointMismatch) as err:
        create_model("resnet20", pretrained=tmp_path / "se.pt")
    message = str(err.value)
    assert "missing keys ['fc.bias']" in message
    assert "unexpected keys ['layer1.0.se.fc1.bias'" in message


class Payload:
    """Not a tensor: weights_only=True must refuse to unpickle it."""


def test_checkpoint_with_arbitrary_objects_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": create_model("resnet20").state_dict(), "extra": Payload()}, path)
    with pytest.raises(pickle.UnpicklingError):
        create_model("resnet20", pretrained=path)


TORCHVISION_UPSTREAM = [e for e in (get_entry(n) for n in list_models()) if "torchvision" in e.upstream]


@pytest.mark.parametrize("entry", TORCHVISION_UPSTREAM, ids=lambda e: e.name)
def test_torchvision_weights_match_the_recorded_accuracy_and_preprocessing(entry):
    """The metadata torchvision ships with the weights we would load (no download: the enum is local)."""
    weights = torchvision.models.get_model_weights(entry.upstream["torchvision"])[TORCHVISION_WEIGHTS]
    assert weights.meta["_metrics"]["ImageNet-1K"]["acc@1"] == pytest.approx(entry.reference_top1, abs=1e-3)
    transforms, config = weights.transforms(), entry.data_config
    assert list(transforms.crop_size) == [config.crop] and list(transforms.resize_size) == [config.resize]
    assert list(transforms.mean) == pytest.approx(list(config.mean), abs=1e-3)
    assert transforms.interpolation.value == config.interpolation
    assert weights.meta["num_params"] == sum(p.numel() for p in create_model(entry.name).parameters())
