"""Turn probabilities into the JSON the API promises."""
from __future__ import annotations

import numpy as np

from serve.errors import BadParameter


def parse_k(raw: str | None, num_classes: int, default: int = 5) -> int:
    """k defaults to 5 but never exceeds the classes a model has when it was not given."""
    if raw is None:
        return min(default, num_classes)
    try:
        k = int(raw)
    except ValueError:
        raise BadParameter(f"k must be a positive integer, got {raw!r}") from None
    if not 1 <= k <= num_classes:
        raise BadParameter(f"k must be between 1 and {num_classes} (the model's classes), got {k}")
    return k


def top_k(probs: np.ndarray, k: int, labels: list[str]) -> list[dict]:
    """Highest k scores of one image, best first; ties keep the lower index first."""
    order = np.argsort(-probs, kind="stable")[:k]
    return [{"label": labels[i], "index": int(i), "score": float(probs[i])} for i in order]
