"""The options the issue asks for, beyond the registered variants: SE on any residual family with its
reduction ratio, ResNet v1 striding, CIFAR shortcut B, SqueezeNet bypasses, DenseNet growth, compression
and bottleneck, MobileNet's width, WRN dropout between convs."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from resfam import create_model
from resfam.layers.attention import SqueezeExcite
from tests.test_models_support import one_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

RESIDUAL = ["resnet20", "preact_resnet18", "wrn_16_4", "resnest50d", "dpn68", "squeezenext23"]


def forward(model: nn.Module, size: int = 32) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(torch.randn(2, 3, size, size))


@pytest.mark.parametrize("name", RESIDUAL)
def test_se_attaches_to_every_residual_family(name):
    plain, se = create_model(name), create_model(name, attn_layer="se")
    gates = [m for m in se.modules() if isinstance(m, SqueezeExcite)]
    assert len(gates) == sum(hasattr(m, "branch") for m in se.modules()) > 0
    assert not any(isinstance(m, SqueezeExcite) for m in plain.modules())
    assert forward(se).shape == forward(plain).shape


def test_se_reduction_ratio():
    def reduced_width(model: nn.Module) -> int:
        return next(m for m in model.modules() if isinstance(m, SqueezeExcite)).fc1.out_channels

    assert reduced_width(create_model("seresnet50")) == 256 // 16  # layer1 ends in 256 channels
    assert reduced_width(create_model("seresnet50", attn_kwargs={"reduction": 8})) == 256 // 8


def test_resnet_v1_strides_in_the_first_1x1():
    v15, v1 = create_model("resnet50"), create_model("resnet50", stride_in_1x1=True)
    assert v15.layer2[0].conv1.stride == (1, 1) and v15.layer2[0].conv2.stride == (2, 2)
    assert v1.layer2[0].conv1.stride == (2, 2) and v1.layer2[0].conv2.stride == (1, 1)
    assert forward(v1, 64).shape == (2, 1000)
    with pytest.raises(ValueError, match="bottleneck"):
        create_model("resnet18", stride_in_1x1=True)


def test_cifar_shortcut_a_pads_and_b_projects():
    a, b = create_model("resnet20"), create_model("resnet20", shortcut="B")
    assert sum(p.numel() for p in a.parameters()) == 269_722  # option A has no shortcut parameters
    assert isinstance(b.layer2[0].downsample[0], nn.Conv2d) and forward(b).shape == (2, 10)


@pytest.mark.parametrize("version", ["squeezenet1_0", "squeezenet1_1"])
def test_squeezenet_bypasses(version):
    plain = create_model(version)
    simple = create_model(version, bypass="simple")
    complex_ = create_model(version, bypass="complex")
    assert sum(f.identity for f in simple.features if hasattr(f, "identity")) == 4  # fire3, 5, 7, 9
    assert sum(f.bypass is not None for f in complex_.features if hasattr(f, "bypass")) == 4  # fire2, 4, 6, 8
    assert simple.state_dict().keys() == plain.state_dict().keys()
    for model in (simple, complex_):
        assert forward(model).shape == (2, 1000)
    simple.load_state_dict(plain.state_dict())  # same weights, different function: the shortcut adds
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(simple.eval()(x), plain.eval()(x))


def test_densenet_growth_compression_and_bottleneck():
    base = create_model("densenet_bc_100_12")
    assert base.features.transition1.conv.out_channels == (24 + 16 * 12) // 2
    wide = create_model("densenet_bc_100_12", growth_rate=24, compression=1.0, bn_size=0)
    layer = wide.features.denseblock1.denselayer1
    assert not layer.bottleneck and layer.conv1.kernel_size == (3, 3) and layer.conv1.out_channels == 24
    assert wide.features.transition1.conv.out_channels == 24 + 16 * 24
    assert forward(wide).shape == (2, 10)


def test_mobilenet_width_multiplier():
    thin = create_model("mobilenet_v1", width_multiplier=0.5)
    assert thin.num_features == 512 and forward(thin).shape == (2, 1000)
    assert create_model("mobilenet_v1_050").num_features == 512


def test_wrn_dropout_sits_between_the_convs():
    block = create_model("wrn_16_4").stages[0].blocks[1]
    assert isinstance(block.dropout, nn.Dropout) and block.dropout.p == 0.3
    assert isinstance(create_model("wrn_16_4", drop_rate=0.0).stages[0].blocks[1].dropout, nn.Identity)
