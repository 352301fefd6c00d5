"""The live server: started once per test session as a user would start it, spoken to over real HTTP."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    def __init__(self, config: dict, workdir: Path) -> None:
        self.port = config["http"]["port"]
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = workdir / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / "server.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 180) -> None:
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "serve", "--config", str(self.config_path)],
            cwd=ROOT, env=env, stdout=self.log_path.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/models", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise RuntimeError(f"server not ready in {timeout_s}s:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # the server drains and stops Ray itself
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def reload(self, config: dict, timeout_s: float = 180) -> None:
        """Write a new config and SIGHUP the server, as an operator would; wait until it is deployed."""
        deployed = self.log_path.read_text().count("resfam-serve ready")
        self.config_path.write_text(yaml.safe_dump(config))
        self.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout_s
        while self.log_path.read_text().count("resfam-serve ready") == deployed:
            if time.monotonic() > deadline or "reload failed" in self.log_path.read_text():
                raise RuntimeError(f"reload did not finish:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.5)


def default_config(port: int, state_dir: Path | None = None) -> dict:
    """The shipped config on another port, keeping its feedback store out of the project's state."""
    config = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())
    config["model_repository"] = str(ROOT / "models")
    config["http"]["port"] = port
    state_dir = state_dir or Path(tempfile.mkdtemp(prefix="resfam-state-"))
    config.setdefault("feedback", {})["path"] = str(state_dir / "feedback.sqlite")
    return config


# Requests that name no model go through the shipped A/B experiment: one sticky user keeps them on one arm.
TEST_USER = {"X-User-Id": "test-suite"}


@contextmanager
def shipped_server(tmp_path_factory, name: str) -> Iterator[LiveServer]:
    """A server with the shipped config, its own port, folder and feedback store."""
    workdir = tmp_path_factory.mktemp(name)
    live = LiveServer(default_config(free_port(), workdir), workdir)
    live.start()
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> LiveServer:
    with shipped_server(tmp_path_factory, "server") as live:
        yield live


def client_for(live: LiveServer, headers: dict[str, str] | None = None) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, timeout=60, headers=headers) as c:
        yield c


@pytest.fixture(scope="session")
def client(server: LiveServer) -> httpx.Client:
    yield from client_for(server, TEST_USER)
