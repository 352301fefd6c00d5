def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channel counts to hardware-friendly multiples without losing more than 10%."""
    min_value = min_value or divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded
