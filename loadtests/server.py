"""Start and stop `python -m serve --config F` as a user would; shared by the scenarios and the test suite."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from serve.cluster.ray_env import spare_ports
from loadtests.procs import memory_by_process, process_tree, rss_bytes, title

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """Not an ephemeral port (the kernel hands those straight back out, and Ray's agents take fixed ones
    there, such as 52365): a server's port must still be free when its front door binds it."""
    return spare_ports(1)[0]


def default_config(port: int) -> dict:
    """The shipped serve/config.yaml with an absolute repository and the given port."""
    config = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())
    config["model_repository"] = str(ROOT / "models")
    config["http"]["port"] = port
    return config


class LiveServer:
    """One server process and its config file; ready when GET /v2/health/ready answers 200.

    Its feedback store lives in its own folder, never in the project's .state/: `config` stays as the caller
    gave it, so two servers of one config compare equal (ServerPool reuses on that)."""

    def __init__(self, config: dict, workdir: Path) -> None:
        self.port = config["http"]["port"]
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.config_path = workdir / "config.yaml"
        self._write(config)
        self.log_path = workdir / "server.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 180) -> float:
        """Start and wait until ready; returns the seconds it took."""
        started = time.monotonic()
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        self.process = subprocess.Popen(
            self.command(),
            cwd=ROOT, env=env, stdout=self.log_path.open("a"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = started + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log_path.read_text()[-3000:]}")
            if self.ready() and self.deployments() > 0:  # not whatever else answers on the port
                return time.monotonic() - started
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"server not ready in {timeout_s}s:\n{self.log_path.read_text()[-3000:]}")

    def command(self) -> list[str]:
        """The server's command line; it reads everything else from config_path."""
        return [sys.executable, "-m", "serve", "--config", str(self.config_path)]

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/v2/health/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # the server drains and stops Ray itself
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """SIGKILL the whole tree, not only the process group: Ray starts its workers, and HAProxy under
        them, in groups of their own, and a killed group alone left a haproxy behind, re-parented to init.
        Everything is stopped first, so nothing spawns (HAProxy reloads do) between listing and killing."""
        frozen: set[int] = set()
        while fresh := set(process_tree(self.pid)) - frozen:
            for pid in fresh:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
            frozen |= fresh
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait()

    def reload(self, config: dict, timeout_s: float = 180) -> None:
        """Write a new config and SIGHUP the server, as an operator would; wait until it is deployed."""
        deployed = self.deployments()
        self._write(config)
        self.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout_s
        while self.deployments() == deployed:
            if time.monotonic() > deadline or "reload failed" in self.log_path.read_text():
                raise RuntimeError(f"reload did not finish:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.5)

    def deployments(self) -> int:
        """How often this server has said it deployed the application (start, then each reload)."""
        return self.log_path.read_text().count("resfam-serve ready")

    def _write(self, config: dict) -> None:
        self.config = config
        feedback = {**config.get("feedback", {}), "path": str(self.workdir / "feedback.sqlite")}
        self.config_path.write_text(yaml.safe_dump({**config, "feedback": feedback}))

    def __enter__(self) -> "LiveServer":
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.process is not None, "server not started"
        return self.process.pid

    def rss_mb(self) -> float:
        """Summed RSS of the whole server process tree (driver, Ray daemons, replicas)."""
        return sum(rss_bytes(p) for p in process_tree(self.pid)) / 1e6

    def memory_by_process(self) -> dict[str, float]:
        return memory_by_process(self.pid)

    def replica_pids(self, deployment: str) -> list[int]:
        """PIDs of this server's replicas of the deployments whose name starts with `deployment` (process
        title `ray::ServeReplica:<app>:<name>`; `classifier-<model>` matches with or without a version)."""
        marker = f"ServeReplica:resfam:{deployment}"
        return [p for p in process_tree(self.pid) if marker in title(p)]


class ServerPool:
    """At most one server at a time, reused while consecutive scenarios ask for the same config."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.current: LiveServer | None = None
        self.starts = 0

    def get(self, config: dict) -> LiveServer:
        """A ready server for `config` (its http.port is chosen here)."""
        wanted = {**config, "http": {**config.get("http", {}), "port": 0}}
        if self.current is not None:
            running = {**self.current.config, "http": {**self.current.config["http"], "port": 0}}
            if running == wanted and self.current.ready():
                return self.current
            self.close()
        self.starts += 1
        config = {**config, "http": {**config.get("http", {}), "host": "127.0.0.1", "port": free_port()}}
        self.current = LiveServer(config, self.workdir / f"server-{self.starts}")
        self.current.start()
        return self.current

    def close(self) -> None:
        if self.current is not None:
            self.current.stop()
            self.current = None
