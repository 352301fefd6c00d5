"""Architecture summary: per-stage output shapes, depth as the papers count it, parameters and MACs.

Depth counts the conv and fully-connected layers on the main path. Not counted: projection shortcuts,
attention gates and a second parallel branch of the same layer, recognised by the module names the
families use for them (below). MACs count every Conv2d and Linear, shortcuts and gates included.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from resfam.factory import create_model

# Module names (a part of a qualified name) that put a layer off the main path.
OFF_MAIN_PATH = {
    "downsample": "projection shortcut (ResNet family, SqueezeNext)",
    "c1x1_w_s1": "DPN projection shortcut",
    "c1x1_w_s2": "DPN projection shortcut",
    "bypass": "SqueezeNet complex bypass",
    "se": "squeeze-excitation gate",
    "fc1": "attention gate (split attention)",
    "fc2": "attention gate (split attention)",
    "expand1x1": "runs beside expand3x3: one Fire layer",
}


def counts_as_layer(qualified_name: str) -> bool:
    return not any(part in OFF_MAIN_PATH for part in qualified_name.split("."))


def layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    """Multiply-accumulates of one Conv2d or Linear call, per sample."""
    per_sample = output[0].numel()
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return per_sample * (module.in_channels // module.groups) * kh * kw
    return per_sample * module.in_features


def summarize(name: str, input_size: int | None = None) -> dict[str, Any]:
    """Run one image of the model's input size (or input_size x input_size) through `name`."""
    model = create_model(name).eval()
    channels, height, width = model.data_config.input_size
    if input_size is not None:
        height = width = input_size
    ran: dict[str, int] = {}
    stages: list[dict[str, Any]] = []
    handles = []
    for qualified, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            handles.append(module.register_forward_hook(_record_macs(qualified, ran)))
    for stage, module in model.stage_modules():
        handles.append(module.register_forward_hook(_record_shape(stage, stages)))
    try:
        with torch.no_grad():
            model(torch.zeros(1, channels, height, width))
    finally:
        for handle in handles:
            handle.remove()
    return {
        "name": name,
        "input_size": [channels, height, width],
        "layers": sum(1 for qualified in ran if counts_as_layer(qualified)),
        "params": sum(p.numel() for p in model.parameters()),
        "macs": sum(ran.values()),
        "stages": stages,
    }


def _record_macs(qualified: str, ran: dict[str, int]):
    def hook(module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        ran[qualified] = ran.get(qualified, 0) + layer_macs(module, output)

    return hook


def _record_shape(stage: str, stages: list[dict[str, Any]]):
    def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        stages.append({"name": stage, "output_shape": list(output.shape[1:])})

    return hook


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as text for a terminal."""
    lines = [
        f"{summary['name']}  input {'x'.join(map(str, summary['input_size']))}",
        f"  layers  {summary['layers']}",
        f"  params  {summary['params'] / 1e6:.2f} M ({summary['params']:,})",
        f"  MACs    {summary['macs'] / 1e9:.3f} G",
        "  stages:",
    ]
    lines += [f"    {s['name']:<12} {'x'.join(map(str, s['output_shape']))}" for s in summary["stages"]]
    return "\n".join(lines)
