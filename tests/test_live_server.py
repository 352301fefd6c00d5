"""The harness that starts servers for tests and load tests: what it writes, and when it reuses one."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import yaml

from loadtests.procs import process_tree
from loadtests.scenarios.common import digits_config
from loadtests.server import LiveServer, default_config, free_port
from serve.cluster.haproxy_orphans import haproxies_using
from serve.cluster.procs import process_running
from tests.haproxy_procs import haproxy_dir


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


@pytest.mark.integration
@pytest.mark.slow  # ~23 s; CI runs it (-m slow)
def test_a_killed_server_takes_every_process_with_it_haproxy_included(tmp_path: Path) -> None:
    # Ray starts its workers, and HAProxy under them, in process groups of their own: killing the server's
    # group alone left them running for seconds, and left a haproxy behind for good.
    config = default_config(free_port())
    config["http"]["proxy"] = "haproxy"
    live = LiveServer(config, tmp_path)
    live.start()
    tree = process_tree(live.pid)
    assert len({os.getpgid(p) for p in tree}) > 1
    own_dir = haproxy_dir(live)
    live.kill()
    deadline = time.monotonic() + 1.0  # SIGKILLed processes take a moment to exit
    while _running(tree) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _running(tree) == []
    assert _running(haproxies_using(own_dir)) == []  # nor one a reload started after the listing
    shutil.rmtree(own_dir)  # removing it is the server's job on a clean exit, which a kill skips


def _running(pids: list[int]) -> list[int]:
    return [p for p in pids if process_running(p)]
