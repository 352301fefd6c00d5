"""The harness that starts servers for tests and load tests: what it writes, and when it reuses one."""
from __future__ import annotations

from pathlib import Path

import yaml

from loadtests.scenarios.common import digits_config
from loadtests.server import LiveServer, default_config, free_port


def test_a_server_keeps_its_feedback_store_in_its_own_folder(tmp_path: Path) -> None:
    config = default_config(free_port())
    live = LiveServer(config, tmp_path / "server")
    written = yaml.safe_load(live.config_path.read_text())
    assert written["feedback"]["path"] == str(tmp_path / "server" / "feedback.sqlite")
    assert live.config == config and written["model_repository"] == config["model_repository"]
    assert list(tmp_path.iterdir()) == [tmp_path / "server"]  # nothing created beside it


def test_scenarios_asking_for_the_same_server_ask_with_equal_configs() -> None:
    # ServerPool reuses a running server only when the configs are equal; a per-call store path broke that.
    assert digits_config() == digits_config()
    assert digits_config(max_batch_size=1) != digits_config()
