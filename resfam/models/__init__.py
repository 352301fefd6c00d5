"""Importing this package registers every family."""
from resfam.models import (  # noqa: F401
    densenet,
    dpn,
    mobilenet,
    resnest,
    resnet,
    resnetv2,
    resnext,
    seresnet,
    squeezenet,
    squeezenext,
    wide_resnet,
)
