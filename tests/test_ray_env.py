"""cluster/ray_env.py's quiet settings for a local Ray name flags the installed Ray still reads (a renamed flag
would silently bring Ray's default back)."""
from __future__ import annotations

import inspect
from pathlib import Path

import ray
from ray.serve._private import constants

from serve.cluster.ray_env import QUIET_LOCAL_RAY


def test_every_quiet_setting_is_a_flag_ray_reads():
    serve_flags = inspect.getsource(constants)
    raylet = (Path(ray.__file__).parent / "core" / "src" / "ray" / "raylet" / "raylet").read_bytes()
    for name in QUIET_LOCAL_RAY:
        if name.startswith("RAY_SERVE_"):
            assert f'"{name}"' in serve_flags, name
        else:  # RAY_<name>: a RayConfig entry of Ray's C++ processes
            assert name.removeprefix("RAY_").encode() in raylet, name

