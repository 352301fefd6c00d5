"""Helpers shared by the tests of the model family (test_models_*.py); no tests of its own."""
from __future__ import annotations

from typing import Iterator

import pytest
import torch
from torch import nn

SMALL = 32  # every registered architecture runs at 32x32, which keeps the default run fast


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread: on this shared 2-core host two threads per process were up to 10x slower
    (OpenMP threads wait on a descheduled peer), so timings and run time stay predictable."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def quiet_branches(model: nn.Module, factor: float = 0.1) -> nn.Module:
    """Scale the last layer of every residual branch, as training leaves it in deep nets.

    A freshly initialised 100+ layer network in eval mode is badly conditioned: its activations grow
    with depth (logits of 1e6 in preact_resnet164), and with BN statistics calibrated on data PyTorch's
    own fp32 and fp64 results still differ by ~5e-4, so no exporter could meet 1e-4 on it. With quieter
    branches the ONNX difference is ~1e-7 while every branch still contributes, so a wrong op shows.
    """
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "branch_end"):
                module.branch_end().weight.mul_(factor)
    return model
