"""cluster/haproxy_config.py against the installed Ray's own HAProxy template and haproxy binary (no server):
if Ray's template changes shape, these fail before any server does."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ray.serve._private.haproxy import HAProxyApi, HAProxyConfig
from ray.serve.config import HTTPOptions

from serve.cluster.haproxy_config import (LOOPBACK, MARKER, REAL_BINARY_ENV, FrontDoorLimits, TemplateChanged,
                                          harden, harden_file, real_haproxy, write_wrapper)
from serve.cluster.ray_env import local_ray_environment
from serve.config import ServerConfig, parse_config

LIMITS = FrontDoorLimits(header_timeout_s=2.5, max_connections_per_client=4, exempt=LOOPBACK, max_body_bytes=1000)


def rays_config(directory: Path, host: str = "127.0.0.1", port: int = 8123) -> Path:
    """The config Ray's HAProxyManager writes before it starts haproxy, rendered by Ray's own code."""
    path = directory / "haproxy.cfg"
    api = HAProxyApi(HAProxyConfig(http_options=HTTPOptions(host=host, port=port), stats_port=8404,
                                   metrics_port=9101, socket_path=str(directory / "admin.sock")),
                     config_file_path=str(path))
    api._generate_config_file_internal()
    return path


def binds(config: str) -> dict[str, str]:
    """section header -> the address of its first bind line."""
    found, section = {}, None
    for line in config.splitlines():
        if line and not line[0].isspace():
            section = line
        elif line.strip().startswith("bind ") and section not in found:
            found[section] = line.split()[1]
    return found


def haproxy_check(path: Path, binary: str | None = None, env: dict[str, str] | None = None) -> None:
    checked = subprocess.run([binary or real_haproxy(), "-c", "-f", str(path)], capture_output=True, text=True,
                             env=env)
    assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "0.0.0.0"])
def test_the_stats_page_and_exporter_listen_where_the_front_door_does(tmp_path, host):
    before = rays_config(tmp_path, host).read_text()
    assert binds(before) == {  # what Ray renders: the shape harden() relies on
        "frontend prometheus": ":9101", "frontend http_frontend": f"{'*' if host == '0.0.0.0' else host}:8123",
        "listen stats": "*:8404"}
    front = binds(before)["frontend http_frontend"].rpartition(":")[0]
    assert binds(harden(before, LIMITS)) == {"frontend prometheus": f"{front}:9101",
                                             "frontend http_frontend": f"{front}:8123",
                                             "listen stats": f"{front}:8404"}


def test_the_hardened_config_is_valid_haproxy_with_the_limits_in_the_front_door(tmp_path):
    path = rays_config(tmp_path)
    harden_file(path, LIMITS)
    config = path.read_text()
    haproxy_check(path)
    front_door = config.split("frontend http_frontend\n")[1].split("\nfrontend ")[0]
    assert "timeout http-request 2500ms" in front_door and "http-request wait-for-body time 2500ms" in front_door
    assert "gt 1000 }" in front_door.split("deny_status 413")[1].splitlines()[0]
    assert "acl resfam_exempt src 127.0.0.0/8 ::1" in front_door
    assert "tcp-request connection track-sc0 src if !resfam_exempt" in front_door
    assert "tcp-request connection reject if { sc0_conn_cur gt 4 }" in front_door


def test_exemptions_follow_the_config_and_no_limit_means_no_table():
    limited = FrontDoorLimits.from_options(_config(limit_loopback=True, trusted_proxies=["10.0.0.0/8"]))
    assert limited.exempt == ("10.0.0.0/8",) and limited.max_body_bytes == 20 * 1024 * 1024
    assert "tcp-request connection track-sc0 src if !resfam_exempt" in limited.frontend_lines()
    everyone = FrontDoorLimits.from_options(_config(limit_loopback=True))
    assert "tcp-request connection track-sc0 src" in everyone.frontend_lines()
    unlimited = FrontDoorLimits.from_options(_config(max_connections_per_client=0, header_timeout_s=7))
    assert not any("track-sc0" in line for line in unlimited.frontend_lines())
    assert unlimited.frontend_lines()[0] == "timeout http-request 7000ms"
    assert FrontDoorLimits.from_environment(limited.environment()) == limited


def _config(**http) -> ServerConfig:
    return parse_config({"models": [{"name": "a"}], "http": http})


def _shot(port: int, raw: bytes) -> tuple[bytes, float]:
    """Everything a front door answers to `raw` until it closes, and how long that took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer, time.monotonic() - started


def test_haproxy_refuses_a_declared_oversized_body_at_once_and_cuts_a_stalled_one_in_the_ingress_shape(tmp_path):
    """The front door's lines in a real haproxy, in front of a plain HTTP server standing in for the ingress."""
    backend, front = socket.socket(), socket.socket()
    backend.bind(("127.0.0.1", 0))
    front.bind(("127.0.0.1", 0))
    backend_port, front_port = backend.getsockname()[1], front.getsockname()[1]
    backend.close()
    front.close()
    limits = FrontDoorLimits(header_timeout_s=1, max_connections_per_client=0, exempt=(), max_body_bytes=1000)
    config = tmp_path / "front.cfg"
    config.write_text("\n".join([
        "defaults", "  mode http", "  timeout connect 5s", "  timeout client 30s", "  timeout server 30s",
        "frontend front", f"  bind 127.0.0.1:{front_port}", *(f"  {line}" for line in limits.frontend_lines()),
        "  default_backend ingress", "backend ingress", f"  server ingress 127.0.0.1:{backend_port}", ""]))
    stand_in = subprocess.Popen([sys.executable, "-m", "http.server", "-b", "127.0.0.1", str(backend_port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    haproxy = subprocess.Popen([real_haproxy(), "-db", "-f", str(config)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while b" 200 " not in _answer_or_nothing(front_port) and time.monotonic() < deadline:
            time.sleep(0.1)
        too_large, after_s = _shot(front_port, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\nab")
        head, _, body = too_large.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413 ") and after_s < 0.5, too_large
        assert json.loads(body)["error"]["code"] == "payload_too_large"
        stalled, after_s = _shot(front_port, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 500\r\n\r\nab")
        head, _, body = stalled.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 ") and 0.9 < after_s < 3, (stalled, after_s)
        assert json.loads(body)["error"]["code"] == "request_timeout"
    finally:
        for process in (haproxy, stand_in):
            process.terminate()
            process.wait(10)


def _answer_or_nothing(port: int) -> bytes:
    try:
        return _shot(port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")[0]
    except OSError:
        return b""


def test_rewriting_twice_changes_nothing(tmp_path):
    path = rays_config(tmp_path)
    harden_file(path, LIMITS)
    once = path.read_text()
    harden_file(path, LIMITS)
    assert path.read_text() == once and once.startswith(MARKER) and once.count("timeout http-request") == 1


@pytest.mark.parametrize("section", ["listen stats", "frontend prometheus", "frontend http_frontend"])
def test_a_changed_template_is_refused_by_name(tmp_path, section):
    config = rays_config(tmp_path).read_text().replace(f"{section}\n", f"{section}\n    mode http\n", 1)
    with pytest.raises(TemplateChanged, match=section.split()[1]):
        harden(config, LIMITS)


def test_the_wrapper_rewrites_the_config_then_runs_the_real_haproxy_with_the_same_arguments(tmp_path):
    path = rays_config(tmp_path)
    env = {**os.environ, **LIMITS.environment(), REAL_BINARY_ENV: real_haproxy()}
    haproxy_check(path, str(write_wrapper(tmp_path)), env)
    assert path.read_text().startswith(MARKER)


def test_the_wrapper_refuses_to_start_haproxy_on_a_config_it_cannot_harden(tmp_path):
    path = rays_config(tmp_path)
    path.write_text(path.read_text().replace("listen stats", "listen statistics"))
    env = {**os.environ, **LIMITS.environment(), REAL_BINARY_ENV: real_haproxy()}
    failed = subprocess.run([str(write_wrapper(tmp_path)), "-c", "-f", str(path)], capture_output=True, text=True,
                            env=env)
    assert failed.returncode != 0 and "listen stats" in failed.stderr and "Configuration file is valid" not in (
        failed.stdout + failed.stderr)


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("::1", True), ("localhost", True),
                                            ("0.0.0.0", False), ("10.1.2.3", False), ("example.org", False)])
def test_a_local_server_on_loopback_keeps_rays_node_ip_on_loopback(host, loopback):
    assert bool(local_ray_environment(host)) == loopback
