"""Parameter counts (and MobileNet's mult-adds) as the papers state them, for models no library has."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from resfam import create_model
from resfam.summary import summarize

# (model, millions of parameters as printed in the paper, whether the paper counts BatchNorm parameters)
PAPER = [
    ("resnet20", "0.27", True),  # He et al. 2015, Table 6
    ("resnet32", "0.46", True),
    ("resnet44", "0.66", True),
    ("resnet56", "0.85", True),
    ("resnet110", "1.7", True),
    ("resnet1202", "19.4", True),
    ("preact_resnet164", "1.7", True),  # He et al. 2016, Table 3
    ("preact_resnet1001", "10.2", False),  # 10.33M with BN; the paper's figure is the conv and fc weights
    ("wrn_16_8", "11.0", True),  # Zagoruyko & Komodakis 2016, Table 4
    ("wrn_28_10", "36.5", True),
    ("wrn_40_4", "8.9", True),
    ("resnext29_8x64d", "34.4", False),  # Xie et al. 2017, Table 7, conv and fc weights
    ("resnext29_16x64d", "68.1", False),  # 68.16M with BN
    ("densenet_bc_100_12", "0.8", True),  # Huang et al. 2017, Table 2
    ("densenet_bc_250_24", "15.3", True),
    ("densenet_bc_190_40", "25.6", True),
    ("mobilenet_v1", "4.2", True),  # Howard et al. 2017, Table 6
    ("mobilenet_v1_075", "2.6", True),
    ("mobilenet_v1_050", "1.3", True),
    ("mobilenet_v1_025", "0.5", True),
    ("squeezenext23", "0.72", True),  # Gholami et al. 2018, 1.0-SqNxt-23
    ("squeezenext44_2_0x", "4.4", True),  # the abstract's "VGG-19 accuracy with only 4.4 Million parameters"
]


def count(model: nn.Module, with_bn: bool) -> int:
    skip = set() if with_bn else {id(p) for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


@pytest.mark.parametrize("name,paper,with_bn", PAPER, ids=[row[0] for row in PAPER])
def test_parameters_match_the_paper(name, paper, with_bn):
    with torch.device("meta"):
        millions = count(create_model(name), with_bn) / 1e6
    decimals = len(paper.split(".")[1])
    print(f"params {name}: ours {millions:.3f}M, paper {paper}M")
    assert round(millions, decimals) == float(paper)


def test_mobilenet_v1_mult_adds_at_224():
    """Table 6: 569 million mult-adds for 1.0 MobileNet-224."""
    assert round(summarize("mobilenet_v1")["macs"] / 1e6) == 569
