"""Building blocks shared by the families; attention modules are created by name."""
from resfam.layers.attention import create_attn
from resfam.layers.conv_bn_act import ConvBnAct
from resfam.layers.drop_path import DropPath, drop_path_rates, make_drop_path, residual
from resfam.layers.helpers import make_divisible, zero_init_branch_ends
from resfam.layers.split_attn import SplitAttn

__all__ = [
    "ConvBnAct",
    "DropPath",
    "SplitAttn",
    "create_attn",
    "drop_path_rates",
    "make_divisible",
    "make_drop_path",
    "residual",
    "zero_init_branch_ends",
]
