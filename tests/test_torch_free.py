"""The serving path must run without torch: a serving image is then gigabytes smaller."""
import subprocess
import sys

from tests.conftest import ROOT

BLOCK_TORCH = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch.") or name in ("torchvision", "timm"):
            raise ImportError(f"serving path imported {name}")
sys.meta_path.insert(0, _NoTorch())
import serve.__main__, serve.cluster.app, serve.api.ingress, serve.runtime.deployments, serve.runtime.inference, serve.runtime.preprocess
from serve.cluster.app import build_app
from serve.config import load_config
build_app(load_config("serve/config.yaml"))
assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
print("torch-free")
"""


def test_serving_modules_import_and_build_without_torch():
    result = subprocess.run([sys.executable, "-c", BLOCK_TORCH], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "torch-free" in result.stdout
