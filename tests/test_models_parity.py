"""Upstream checkpoints load with strict=True and give the same logits.

The upstream models are built here with random weights (no download); their BatchNorm statistics and
affine parameters are randomised too, so a misplaced layer cannot hide behind identity normalisation.
"""
from __future__ import annotations

import pytest
import timm
import torch
import torchvision

from resfam import create_model
from resfam.factory import load_state_dict_strict
from tests.test_models_support import one_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

TORCHVISION = [
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2",
    "densenet121", "densenet169", "densenet201", "squeezenet1_0", "squeezenet1_1",
]
TIMM = ["seresnet50", "seresnext50_32x4d", "resnest50d", "dpn68", "dpn92", "resnetv2_50"]


def randomised(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    out = {}
    for key, value in state.items():
        if key.endswith("running_var"):
            value = torch.rand(value.shape, generator=gen) + 0.5
        elif key.endswith("running_mean") or (key.endswith(".bias") and value.ndim == 1):
            value = torch.randn(value.shape, generator=gen) * 0.1
        elif value.is_floating_point() and value.ndim == 1:  # BatchNorm scale
            value = torch.rand(value.shape, generator=gen) + 0.5
        out[key] = value
    return out


def upstream_model(source: str, name: str) -> torch.nn.Module:
    if source == "torchvision":
        return torchvision.models.get_model(name, weights=None)
    return timm.create_model(name, pretrained=False)


@pytest.mark.parametrize(
    "source,name", [("torchvision", n) for n in TORCHVISION] + [("timm", n) for n in TIMM], ids=lambda v: v
)
def test_upstream_weights_give_same_logits(source, name):
    torch.manual_seed(0)
    upstream = upstream_model(source, name).eval()
    state = randomised(upstream.state_dict())
    upstream.load_state_dict(state)
    ours = create_model(name).eval()
    load_state_dict_strict(ours, state)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        diff = (upstream(x) - ours(x)).abs().max().item()
    print(f"parity {name}: max abs diff {diff:.2e}")
    assert diff <= 1e-5
