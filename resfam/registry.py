"""Model registry: a variant is a registered builder plus its data config (timm's pattern)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable

from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


@dataclass(frozen=True)
class DataConfig:
    """Preprocessing a model expects; it travels with the model into ONNX and model.json."""

    input_size: tuple[int, int, int] = (3, 224, 224)
    resize: int = 256
    crop: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"
    num_classes: int = 1000
    dataset: str = "imagenet-1k"

    @property
    def channels(self) -> int:
        return self.input_size[0]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["channels"] = self.channels
        return out


IMAGENET = DataConfig()
CIFAR = DataConfig(
    input_size=(3, 32, 32), resize=32, crop=32, mean=CIFAR_MEAN, std=CIFAR_STD, num_classes=10, dataset="cifar-10"
)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str
    builder: Callable[..., nn.Module]
    data_config: DataConfig
    upstream: dict[str, str] = field(default_factory=dict)  # {"torchvision": ..., "timm": ...}
    reference_top1: float | None = None


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    family: str,
    data_config: DataConfig = IMAGENET,
    upstream: dict[str, str] | None = None,
    reference_top1: float | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a builder under its function name."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if fn.__name__ in _REGISTRY:
            raise ValueError(f"model {fn.__name__!r} registered twice")
        _REGISTRY[fn.__name__] = ModelEntry(fn.__name__, family, fn, data_config, dict(upstream or {}), reference_top1)
        return fn

    return wrap


def get_entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; see resfam.list_models()") from None


def list_models(family: str | None = None) -> list[str]:
    return sorted(n for n, e in _REGISTRY.items() if family is None or e.family == family)


def data_config_for(name: str, num_classes: int | None = None, in_chans: int | None = None) -> DataConfig:
    """The entry's data config adjusted to the classes and channels a model was built with."""
    cfg = get_entry(name).data_config
    if num_classes is not None:
        cfg = replace(cfg, num_classes=num_classes)
    if in_chans is not None and in_chans != cfg.channels:
        mean = tuple(cfg.mean[:in_chans]) if in_chans <= len(cfg.mean) else cfg.mean[:1] * in_chans
        std = tuple(cfg.std[:in_chans]) if in_chans <= len(cfg.std) else cfg.std[:1] * in_chans
        cfg = replace(cfg, input_size=(in_chans, *cfg.input_size[1:]), mean=mean, std=std)
    return cfg
