"""The registry's promises: every variant named in the issue, its preprocessing, its upstream names and
the layout those upstream names imply (checked on the meta device: shapes only, no weights, no download)."""
from __future__ import annotations

import pytest
import timm
import torch
import torchvision

from resfam import create_model, get_entry, list_models

ISSUE_NAMES = """
resnet18 resnet34 resnet50 resnet101 resnet152 resnet20 resnet32 resnet44 resnet56 resnet110 resnet1202 resnet18_cifar
resnetv2_50 resnetv2_101 resnetv2_152 preact_resnet18 preact_resnet34 preact_resnet200 preact_resnet164 preact_resnet1001
wrn_16_8 wrn_28_10 wide_resnet50_2 wide_resnet101_2
resnext50_32x4d resnext101_32x8d resnext101_64x4d resnext29_8x64d resnext29_16x64d
seresnet18 seresnet34 seresnet50 seresnet101 seresnet152 seresnext50_32x4d seresnext101_32x4d
densenet121 densenet169 densenet201 densenet264 densenet_bc_100_12 densenet_bc_250_24 densenet_bc_190_40
dpn68 dpn92 dpn98 dpn107 dpn131 resnest50d resnest101e resnest200e resnest269e
squeezenet1_0 squeezenet1_1 squeezenext23 squeezenext34 squeezenext44 squeezenext23_1_5x squeezenext23_2_0x
squeezenext34_1_5x squeezenext34_2_0x squeezenext44_1_5x squeezenext44_2_0x squeezenext23v5
mobilenet_v1 mobilenet_v1_075 mobilenet_v1_050 mobilenet_v1_025
""".split()


def test_every_variant_of_the_issue_is_registered():
    assert not set(ISSUE_NAMES) - set(list_models())


@pytest.mark.parametrize("name", list_models())
def test_data_config_travels_with_the_variant(name):
    cfg = get_entry(name).data_config
    channels, height, width = cfg.input_size
    assert channels == 3 and height == width == cfg.crop <= cfg.resize
    assert len(cfg.mean) == len(cfg.std) == 3 and cfg.interpolation in ("bilinear", "bicubic")
    if cfg.dataset.startswith("cifar"):
        assert cfg.num_classes == 10 and height == 32
    with torch.device("meta"):  # the classifier's width; test_models_all runs the forward pass
        assert create_model(name).num_classes == cfg.num_classes


def _upstream_architectures() -> list[tuple[str, str, str]]:
    """(ours, library, upstream architecture): named weights, and timm architectures that have none."""
    rows = []
    for name in list_models():
        for source, tag in get_entry(name).upstream.items():
            rows.append((name, source, tag.split(".")[0]))
        if not get_entry(name).upstream and timm.is_model(name):
            rows.append((name, "timm", name))
    return rows


@pytest.mark.parametrize("name,source,arch", _upstream_architectures(), ids=lambda v: v)
def test_layout_matches_upstream(name, source, arch):
    """Same state-dict keys and shapes, so the upstream checkpoint loads with strict=True."""
    with torch.device("meta"):
        upstream = (
            torchvision.models.get_model(arch, weights=None) if source == "torchvision" else timm.create_model(arch)
        )
        ours = create_model(name)
    theirs = {k: tuple(v.shape) for k, v in upstream.state_dict().items()}
    mine = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert mine == theirs


@pytest.mark.parametrize("name", list_models())
def test_upstream_names_exist_offline(name):
    """The names create_model(..., pretrained="torchvision"/"timm") would download really exist."""
    upstream = get_entry(name).upstream
    if "torchvision" in upstream:
        assert upstream["torchvision"] in torchvision.models.list_models()
    if "timm" in upstream:
        assert upstream["timm"] in timm.list_pretrained(upstream["timm"])
