"""Importing this package registers every family."""
from resfam.models import resnet  # noqa: F401
