"""DenseNet's memory-efficient mode: same outputs, gradients and BN statistics, lower peak training memory."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from resfam import create_model
from tests.conftest import ROOT
from tests.test_models_support import one_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

# Peak resident memory of one training step, measured in a fresh process so that nothing else shares it.
# VmHWM (the process's high-water mark) is reset to the current size through clear_refs just before the
# step; ru_maxrss would not do, Linux carries it over from the parent (here: pytest) across exec.
PEAK_SCRIPT = """
import json, sys, torch
from resfam import create_model
def kib(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))
torch.set_num_threads(1)
name, size, batch, efficient = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
model = create_model(name, memory_efficient=efficient).train()
x = torch.randn(batch, 3, size, size)
before = kib("VmRSS")
with open("/proc/self/clear_refs", "w") as refs:
    refs.write("5")
model(x).sum().backward()
print(json.dumps({"peak_kib": kib("VmHWM") - before}))
"""


def training_peak_mib(name: str, size: int, batch: int, efficient: bool) -> float:
    """Growth of the process's peak resident memory over one forward and backward pass."""
    out = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, name, str(size), str(batch), str(int(efficient))],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout
    return json.loads(out.splitlines()[-1])["peak_kib"] / 1024


def test_same_outputs_gradients_and_statistics():
    torch.manual_seed(0)
    plain = create_model("densenet_bc_100_12").train()
    efficient = create_model("densenet_bc_100_12", memory_efficient=True).train()
    efficient.load_state_dict(plain.state_dict())
    x = torch.randn(4, 3, 32, 32)
    out_plain, out_efficient = plain(x), efficient(x)
    out_plain.square().sum().backward()
    out_efficient.square().sum().backward()
    assert torch.allclose(out_plain, out_efficient, rtol=0, atol=1e-6)
    for (name, a), b in zip(plain.named_parameters(), efficient.parameters()):
        assert torch.allclose(a.grad, b.grad, rtol=1e-5, atol=1e-6), name
    # Recomputation in backward must not update BatchNorm's running statistics a second time.
    for (name, a), b in zip(plain.named_buffers(), efficient.buffers()):
        assert torch.equal(a, b), name


def test_eval_runs_without_checkpointing():
    model = create_model("densenet_bc_100_12", memory_efficient=True).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_lower_peak_training_memory():
    plain = training_peak_mib("densenet_bc_100_12", 32, 16, efficient=False)
    efficient = training_peak_mib("densenet_bc_100_12", 32, 16, efficient=True)
    print(f"\ndensenet_bc_100_12, batch 16 at 32x32, training step peak: {plain:.0f} MiB -> {efficient:.0f} MiB")
    assert efficient < 0.85 * plain  # 599 -> 441 MiB here; 1979 -> 912 MiB at batch 64


def cuda_peak_mib(name: str, size: int, batch: int, efficient: bool) -> float:
    """Peak CUDA memory allocated by one forward and backward pass, after a warm-up pass."""
    model = create_model(name, memory_efficient=efficient).cuda().train()
    x = torch.randn(batch, 3, size, size, device="cuda")
    model(x).sum().backward()
    model.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    model(x).sum().backward()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


@pytest.mark.bench
def test_peak_training_memory_densenet121():
    """Batch 16 on the CPU (resident memory), 64 on a GPU (CUDA allocations)."""
    measure, batch, unit = (cuda_peak_mib, 64, "CUDA") if torch.cuda.is_available() else (training_peak_mib, 16, "RSS")
    plain = measure("densenet121", 224, batch, efficient=False)
    efficient = measure("densenet121", 224, batch, efficient=True)
    print(f"\ndensenet121, batch {batch} at 224x224, training step peak ({unit}): {plain:.0f} MiB -> "
          f"{efficient:.0f} MiB ({1 - efficient / plain:.0%} less)")
    assert efficient < plain
