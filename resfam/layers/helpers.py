from torch import nn


def zero_init_branch_ends(model: nn.Module) -> None:
    """Zero the layer that ends each residual branch, so every block starts as its shortcut (Goyal et al.
    2017). Residual blocks name that layer through their branch_end() method."""
    for module in model.modules():
        if hasattr(module, "branch_end"):
            nn.init.zeros_(module.branch_end().weight)


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channel counts to hardware-friendly multiples without losing more than 10%."""
    min_value = min_value or divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded
