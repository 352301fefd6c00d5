"""SqueezeNet (Iandola et al. 2016): Fire modules (1x1 squeeze, then parallel 1x1 and 3x3 expand).

bypass="simple" adds identity shortcuts around the Fire modules whose input and output widths match
(fire3, 5, 7, 9); bypass="complex" also adds 1x1-conv shortcuts around the others (paper sec. 6).
Module names follow torchvision so its weights load (they have no bypass).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from resfam.registry import register_model

POOL = "M"
# (squeeze, expand) per Fire module, POOL for a 3x3/2 max-pool, as in the paper's Table 1 and v1.1.
FIRES_1_0: Sequence[Any] = ((16, 64), (16, 64), (32, 128), POOL, (32, 128), (48, 192), (48, 192), (64, 256), POOL, (64, 256))
FIRES_1_1: Sequence[Any] = ((16, 64), (16, 64), POOL, (32, 128), (32, 128), POOL, (48, 192), (48, 192), (64, 256), (64, 256))


class Fire(nn.Module):
    def __init__(self, in_ch: int, squeeze: int, expand: int, bypass: str | None = None) -> None:
        super().__init__()
        out_ch = 2 * expand
        self.squeeze = nn.Conv2d(in_ch, squeeze, 1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze, expand, 1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze, expand, 3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)
        self.identity = bypass is not None and in_ch == out_ch
        self.bypass = nn.Conv2d(in_ch, out_ch, 1) if bypass == "complex" and in_ch != out_ch else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.squeeze_activation(self.squeeze(x))
        out = torch.cat(
            [self.expand1x1_activation(self.expand1x1(s)), self.expand3x3_activation(self.expand3x3(s))], 1
        )
        if self.identity:
            return out + x
        return out if self.bypass is None else out + self.bypass(x)


class SqueezeNet(nn.Module):
    def __init__(
        self, version: str = "1_0", num_classes: int = 1000, in_chans: int = 3, bypass: str | None = None,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if version not in ("1_0", "1_1"):
            raise ValueError("version must be '1_0' or '1_1'")
        if bypass not in (None, "simple", "complex"):
            raise ValueError("bypass must be None, 'simple' or 'complex'")
        self.num_classes = num_classes
        # v1.0: 96 7x7 filters; v1.1: 64 3x3 filters and earlier pooling (2.4x less computation).
        stem_ch, kernel, fires = (96, 7, FIRES_1_0) if version == "1_0" else (64, 3, FIRES_1_1)
        layers: list[nn.Module] = [
            nn.Conv2d(in_chans, stem_ch, kernel, stride=2), nn.ReLU(inplace=True), self._pool()
        ]
        self._stage_idx = [(len(layers) - 2, "conv1")]
        ch, fire_no = stem_ch, 2
        for spec in fires:
            if spec == POOL:
                self._stage_idx.append((len(layers) - 1, f"fire{fire_no - 1}"))
                layers.append(self._pool())
                continue
            layers.append(Fire(ch, spec[0], spec[1], bypass))
            ch, fire_no = 2 * spec[1], fire_no + 1
        self._stage_idx.append((len(layers) - 1, f"fire{fire_no - 1}"))
        self.features = nn.Sequential(*layers)
        final_conv = nn.Conv2d(ch, num_classes, 1)
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout), final_conv, nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1)
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if m is final_conv:
                    nn.init.normal_(m.weight, std=0.01)
                else:
                    nn.init.kaiming_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    @staticmethod
    def _pool() -> nn.MaxPool2d:
        return nn.MaxPool2d(3, stride=2, ceil_mode=True)

    def stage_modules(self) -> list[tuple[str, nn.Module]]:
        return [("stem" if name == "conv1" else name, self.features[i]) for i, name in self._stage_idx]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)


@register_model("squeezenet", upstream={"torchvision": "squeezenet1_0"}, reference_top1=58.092)
def squeezenet1_0(**kwargs: Any) -> SqueezeNet:
    return SqueezeNet("1_0", **kwargs)


@register_model("squeezenet", upstream={"torchvision": "squeezenet1_1"}, reference_top1=58.178)
def squeezenet1_1(**kwargs: Any) -> SqueezeNet:
    return SqueezeNet("1_1", **kwargs)
