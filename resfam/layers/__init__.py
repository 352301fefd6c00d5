"""Building blocks shared by the families; attention modules are created by name."""
from resfam.layers.attention import create_attn
from resfam.layers.drop_path import DropPath, drop_path_rates
from resfam.layers.helpers import make_divisible

__all__ = ["DropPath", "create_attn", "drop_path_rates", "make_divisible"]
