"""deploy/Dockerfile: official Ray base of the installed version, serving extra only, non-root, models baked."""
import re
import tomllib
from pathlib import Path

import ray

from deploy.serve_config import IMAGE_APP_DIR
from deploy.variants import VARIANTS

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "deploy" / "Dockerfile").read_text()


def instructions(name: str) -> list[str]:
    return [line.split(None, 1)[1] for line in DOCKERFILE.splitlines() if line.startswith(name + " ")]


def test_base_images_are_the_official_ray_images_of_the_installed_version():
    assert f"RAY_VERSION={ray.__version__}" in instructions("ARG")
    bases = instructions("FROM")
    assert "rayproject/ray:${RAY_VERSION}-${PYTHON_TAG} AS base-cpu" in bases
    assert "rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}-gpu AS base-gpu" in bases
    assert bases[-1] == "base-${VARIANT}"
    assert {v.image().rsplit("-", 1)[1] for v in VARIANTS.values()} == {"cpu", "gpu"}


def test_final_stage_is_non_root_and_installs_only_the_serving_extra():
    final_stage = DOCKERFILE.split("FROM base-${VARIANT}", 1)[1]
    users = re.findall(r"^USER (\S+)", final_stage, re.M)
    assert users and users[-1] == "ray"
    assert 'pip install --no-cache-dir -e ".[serve]"' in final_stage
    assert "train" not in final_stage and "sys.exit('torch must not be in the serving image')" in final_stage
    assert f"WORKDIR {IMAGE_APP_DIR}" in final_stage and "COPY --chown=ray:users models/ models/" in final_stage


def test_serving_extra_has_no_torch():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert not [dep for dep in extras["serve"] if dep.lower().startswith(("torch", "timm"))]


def test_gpu_stage_brings_cuda_13_and_cudnn_9_for_onnxruntime_gpu():
    gpu_stage = DOCKERFILE.split("AS base-gpu", 1)[1].split("FROM base-${VARIANT}", 1)[0]
    for wheel in ('"nvidia-cublas==13.*"', '"nvidia-cuda-runtime==13.*"', '"nvidia-cudnn-cu13==9.*"'):
        assert wheel in gpu_stage
    assert "ldconfig" in gpu_stage


def test_build_context_carries_what_the_image_copies():
    ignore = (ROOT / "deploy" / "Dockerfile.dockerignore").read_text().split()
    for copied in ("pyproject.toml", "README.md", "serve/", "models/"):
        assert f"!{copied}" in ignore and (ROOT / copied).exists()
