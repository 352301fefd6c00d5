"""create_model: build a registered variant and, if asked, load weights into it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from resfam.registry import data_config_for, get_entry


class CheckpointMismatch(ValueError):
    """A checkpoint's keys do not fit the model; the message names them."""


def create_model(
    name: str, num_classes: int | None = None, pretrained: str | Path | None = None, **overrides: Any
) -> nn.Module:
    """Build `name`; `pretrained` is None, a checkpoint path, "torchvision" or "timm"."""
    entry = get_entry(name)
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    model = entry.builder(**overrides)
    model.arch = name
    model.data_config = data_config_for(name, overrides.get("num_classes"), overrides.get("in_chans"))
    if pretrained is not None:
        load_weights(model, name, pretrained)
    return model


def load_weights(model: nn.Module, name: str, pretrained: str | Path) -> None:
    if pretrained in ("torchvision", "timm"):
        state = _upstream_state_dict(name, str(pretrained))
    else:
        state = torch.load(Path(pretrained), map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
    load_state_dict_strict(model, state)


def load_state_dict_strict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointMismatch(
            f"checkpoint does not fit {getattr(model, 'arch', type(model).__name__)}: "
            f"missing keys {missing[:10]}{'...' if len(missing) > 10 else ''}, "
            f"unexpected keys {unexpected[:10]}{'...' if len(unexpected) > 10 else ''}"
        )
    model.load_state_dict(state, strict=True)


# The weights whose accuracy and preprocessing the registry records (DEFAULT is the V2 recipe for some).
TORCHVISION_WEIGHTS = "IMAGENET1K_V1"


def _upstream_state_dict(name: str, source: str) -> dict[str, torch.Tensor]:
    """Downloads only because the user asked for upstream weights by name."""
    upstream = get_entry(name).upstream.get(source)
    if upstream is None:
        raise ValueError(f"{name} has no {source} weights; available: {sorted(get_entry(name).upstream)}")
    if source == "torchvision":
        import torchvision

        return torchvision.models.get_model(upstream, weights=TORCHVISION_WEIGHTS).state_dict()
    import timm

    return timm.create_model(upstream, pretrained=True).state_dict()
