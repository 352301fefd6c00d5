"""Every registered architecture: training step, then ONNX export checked against PyTorch by ONNX Runtime."""
from __future__ import annotations

import pytest
import torch

from resfam import create_model, get_entry, list_models
from resfam.export import to_onnx
from tests.test_models_support import SMALL, one_thread, quiet_branches  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


# The deepest variants take 17-23 s each here (a third of this file's time): CI runs them (-m slow), make test not.
DEEPEST = {"resnet1202", "preact_resnet1001", "resnest269e"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in DEEPEST else n
                                  for n in list_models()])
def test_forward_backward_and_onnx(name, tmp_path):
    torch.manual_seed(0)
    model = quiet_branches(create_model(name))
    num_classes = get_entry(name).data_config.num_classes

    report = to_onnx(model, tmp_path / "model.onnx", input_size=(3, SMALL, SMALL), batch=2, tolerance=1e-4)
    assert report.max_abs_diff <= 1e-4
    report.path.unlink()  # all 77 files together hold ~9 GB, and pytest keeps the last three runs' tmp_path

    model.train()
    x = torch.randn(2, 3, SMALL, SMALL, requires_grad=True)
    out = model(x)
    assert out.shape == (2, num_classes)
    out.logsumexp(dim=1).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no finite gradient for {missing[:5]}"


@pytest.mark.exhaustive
@pytest.mark.parametrize("name", list_models())
def test_onnx_at_native_input_size(name, tmp_path):
    torch.manual_seed(0)
    model = quiet_branches(create_model(name))
    size = get_entry(name).data_config.input_size
    report = to_onnx(model, tmp_path / "model.onnx", input_size=size, batch=1)
    assert report.max_abs_diff <= 1e-4
    report.path.unlink()
