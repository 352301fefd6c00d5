"""resfam: the ResNet family in PyTorch, faithful to the papers and loadable from torchvision/timm."""
from resfam import models  # noqa: F401  (registers the families)
from resfam.factory import CheckpointMismatch, create_model
from resfam.registry import DataConfig, get_entry, list_models

__all__ = ["CheckpointMismatch", "DataConfig", "create_model", "get_entry", "list_models"]
