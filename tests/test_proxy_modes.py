"""`http.proxy`: Ray Serve's Python proxy (shipped) and its HAProxy ingress answer alike, errors included."""
from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from loadtests.photos import digit_pngs, jpeg_photos
from loadtests.procs import process_tree, title
from tests.test_ports import assert_refused_and_first_unharmed
from loadtests.server import LiveServer, default_config, free_port
from serve.config import ConfigError, parse_config
from serve.cluster.procs import process_running
from serve.cluster.haproxy_orphans import (OWNER_FILE, haproxies_using, haproxy_arguments,
                                   reap_orphaned_haproxy)
from serve.cluster.ray_env import local_haproxy_files, local_haproxy_ports, serve_environment
from tests.haproxy_procs import haproxy_config, haproxy_dir, haproxy_processes, serving_haproxies

pytestmark = pytest.mark.integration


def test_haproxy_turns_on_ray_serves_high_throughput_mode():
    env = serve_environment("haproxy")
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"


def test_ray_proxy_turns_both_flags_off_whatever_the_environment_says():
    env = serve_environment("ray")
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "0"


def test_local_haproxy_ports_are_distinct_free_and_outside_the_ephemeral_range():
    ports = [int(p) for p in local_haproxy_ports(http_port=8000).values()]
    assert len(set(ports)) == 4 and all(p < 32768 for p in ports)
    for port in ports:
        with socket.socket() as s:
            s.bind(("0.0.0.0", port))


def test_local_haproxy_files_all_lie_in_the_given_directory(tmp_path):
    paths = local_haproxy_files(tmp_path)
    assert len(paths) == 5 and all(Path(p).parent == tmp_path or Path(p) == tmp_path for p in paths.values())


def test_unknown_proxy_is_a_config_error():
    with pytest.raises(ConfigError, match=r"http\.proxy"):
        parse_config({"models": [{"name": "a"}], "http": {"proxy": "nginx"}})


HEADER_TIMEOUT_S = 2.0
PER_CLIENT = 4


@pytest.fixture(scope="module")
def haproxy_server(tmp_path_factory) -> LiveServer:
    config = default_config(free_port())
    config["http"].update(proxy="haproxy", header_timeout_s=HEADER_TIMEOUT_S, max_connections_per_client=PER_CLIENT,
                          limit_loopback=True)  # so that 127.0.0.x clients stand for distinct addresses
    config["models"][1]["runs_in"] = "replica"  # a Classifier replica too, whose gRPC server must stay on loopback
    live = LiveServer(config, tmp_path_factory.mktemp("haproxy-server"))
    live.start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def ray_server(tmp_path_factory) -> LiveServer:
    """The shipped config behind Ray's proxy (what a config that names no proxy, and a cluster, run)."""
    config = default_config(free_port())
    config["http"]["proxy"] = "ray"
    live = LiveServer(config, tmp_path_factory.mktemp("ray-server"))
    live.start()
    yield live
    live.stop()


def _answer(url: str, image: bytes, content_type: str, model: str) -> tuple[int, dict]:
    answer = httpx.post(f"{url}/classify", content=image, headers={"Content-Type": content_type},
                        params={"model": model, "k": 5}, timeout=60)
    body = answer.json()
    body.pop("request_id", None)
    return answer.status_code, body


def test_the_shipped_server_answers_through_haproxy_and_a_ray_mode_one_through_rays_proxy(
        server: LiveServer, ray_server: LiveServer) -> None:
    assert len(serving_haproxies(server)) == 1
    assert not haproxy_processes(ray_server)


@pytest.mark.parametrize("image, content_type, model", [
    (digit_pngs()[0], "image/png", "seresnet20_digits"),
    (jpeg_photos()[1], "image/jpeg", "resnext20_digits"),
    (b"not an image at all", "image/png", "seresnet20_digits"),  # 400
    (digit_pngs()[1], "image/png", "no_such_model"),  # 404
])
def test_both_front_doors_give_identical_answers(ray_server: LiveServer, haproxy_server: LiveServer,
                                                 image: bytes, content_type: str, model: str) -> None:
    assert _answer(haproxy_server.url, image, content_type, model) == _answer(ray_server.url, image, content_type,
                                                                              model)


def test_haproxy_keeps_its_files_in_a_directory_of_the_server_that_goes_with_it(
        tmp_path, haproxy_server: LiveServer) -> None:
    """Beside another HAProxy-mode server on the same host: no fixed port of Ray's (stats, exporter, the
    fallback proxy's 8500/9500) may be shared, and each server keeps its own files."""
    config = default_config(free_port())
    config["http"]["proxy"] = "haproxy"
    with LiveServer(config, tmp_path) as live:
        for url in (live.url, haproxy_server.url):
            assert _answer(url, digit_pngs()[0], "image/png", "seresnet20_digits")[0] == 200
        (haproxy,) = serving_haproxies(live)
        config_file = haproxy_config(haproxy)
        own_dir = config_file.parent.parent  # Ray adds the node id
        assert own_dir.name.startswith("resfam-hap-") and (config_file.parent / "admin.sock").exists()
    assert not own_dir.exists()


def test_reaping_removes_directories_of_dead_owners_and_keeps_live_ones(tmp_path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()  # its pid now names no process
    for name, owner in [("resfam-hap-dead", gone.pid), ("resfam-hap-live", os.getpid())]:
        (tmp_path / name).mkdir()
        (tmp_path / name / OWNER_FILE).write_text(str(owner))
    (tmp_path / "resfam-hap-unowned").mkdir()  # an older server's: nothing says whose, so it stays
    assert reap_orphaned_haproxy(tmp_path) == []
    assert sorted(d.name for d in tmp_path.iterdir()) == ["resfam-hap-live", "resfam-hap-unowned"]


@pytest.mark.slow  # ~45 s: two servers, one killed outright; CI runs it (-m slow)
def test_a_server_stops_the_haproxy_a_killed_server_left_on_its_port(tmp_path) -> None:
    config = default_config(free_port())
    config["http"]["proxy"] = "haproxy"
    first = LiveServer(config, tmp_path / "first")
    first.start()
    own_dir = haproxy_dir(first)
    # Killed outright, the server and Ray's HAProxy manager with it (the OOM killer, `kill -9`, or a kill
    # while Ray is reloading HAProxy): nothing is left to stop haproxy.
    for pid in process_tree(first.pid):
        if not haproxy_arguments(pid):
            os.kill(pid, signal.SIGKILL)
    first.process.wait()
    orphans = [p for p in haproxies_using(own_dir) if process_running(p)]
    assert orphans, "the killed server left no haproxy behind: nothing to test"
    with LiveServer(config, tmp_path / "second") as second:  # the same port the orphan holds
        assert not any(process_running(p) for p in orphans) and not own_dir.exists()
        assert f"stopped haproxy {orphans}" in second.log_path.read_text()
        assert _answer(second.url, digit_pngs()[0], "image/png", "seresnet20_digits")[0] == 200


def test_a_second_server_on_haproxys_port_fails_at_once(haproxy_server: LiveServer) -> None:
    assert_refused_and_first_unharmed(haproxy_server, "haproxy")


def test_a_second_server_on_the_ray_proxys_port_fails_at_once(ray_server: LiveServer) -> None:
    assert_refused_and_first_unharmed(ray_server, "ray::ProxyActor")


def listeners(pids: set[int]) -> list[tuple[str, int, int]]:
    """(address, port, pid) of each listening socket of the given processes (`ss` maps sockets to processes)."""
    found = []
    for line in subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout.splitlines():
        if owner := next((pid for pid in pids if f"pid={pid}," in line), None):
            address, _, port = line.split()[3].rpartition(":")
            found.append((address, int(port), owner))
    return found


def is_loopback(address: str) -> bool:
    """An `ss` local address: 127.0.0.1, [::1], [::ffff:127.0.0.1] (an IPv6 socket bound to 127.0.0.1), * ..."""
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:  # `*`: every interface
        return False
    return (ip.ipv4_mapped or ip).is_loopback if isinstance(ip, ipaddress.IPv6Address) else ip.is_loopback


@pytest.mark.parametrize("mode", ["ray", "haproxy"])
def test_nothing_of_a_local_server_on_loopback_listens_elsewhere(mode: str, request) -> None:
    """Ray's gRPC ports and agents follow the node IP (ray_env.local_ray_environment), each replica's
    inter-deployment gRPC server follows runtime/replica_grpc.py, HAProxy's stats page and exporter follow the
    front door (cluster/haproxy_config.py), and in HAProxy mode the ingress replica's own HTTP port (HAProxy's
    backend) follows http.host."""
    live: LiveServer = request.getfixturevalue(f"{mode}_server")
    found = listeners(set(process_tree(live.pid)))
    assert {a for a, port, _ in found if port == live.port} == {"127.0.0.1"} and len(found) > 10  # Ray's too
    replicas = [pid for pid in process_tree(live.pid) if title(pid).startswith("ray::ServeReplica:")]
    # Every replica's gRPC server was found, on loopback: Ingress and MetricsHub (the shipped models run in the
    # ingress), and in HAProxy mode a Classifier too.
    assert set(replicas) <= {pid for _, _, pid in found} and len(replicas) >= (3 if mode == "haproxy" else 2)
    assert all(is_loopback(address) for address, _, _ in found), [
        (address, port, title(pid)) for address, port, pid in found if not is_loopback(address)]
    if mode == "haproxy":
        (serving,) = serving_haproxies(live)
        config = haproxy_config(serving).read_text()
        backends = [line.split()[2].rpartition(":") for line in config.splitlines()
                    if line.strip().startswith("server ")]
        ports = {port for _, port, _ in found}
        assert backends and all(host == "127.0.0.1" and int(port) in ports for host, _, port in backends)


HEALTH = b"GET /v2/health/ready HTTP/1.1\r\nHost: t\r\n\r\n"


def _connect(live: LiveServer, source: str, payload: bytes = b"") -> socket.socket:
    sock = socket.socket()
    sock.settimeout(HEADER_TIMEOUT_S + 3)
    sock.bind((source, 0))
    try:
        sock.connect(("127.0.0.1", live.port))
        sock.sendall(payload)
    except (ConnectionResetError, BrokenPipeError):  # refused at or right after the handshake: _reply says so
        pass
    return sock


def _reply(sock: socket.socket) -> bytes:
    """The status line of what the server sends, b"" when it closes without answering."""
    try:
        return sock.recv(65536).split(b"\r\n", 1)[0]
    except TimeoutError:  # silence is not a refusal
        raise
    except OSError:  # reset, or never connected (refused during the handshake)
        return b""


def test_haproxy_answers_408_and_closes_a_connection_whose_headers_stop_halfway(haproxy_server: LiveServer) -> None:
    with _connect(haproxy_server, "127.0.0.4", b"POST /classify HTTP/1.1\r\nHost: t\r\nContent-") as sock:
        started = time.monotonic()
        status = _reply(sock)
        waited = time.monotonic() - started
        assert status.startswith(b"HTTP/1.1 408") and _reply(sock) == b""
    assert HEADER_TIMEOUT_S - 0.3 <= waited <= HEADER_TIMEOUT_S + 1.5


def test_haproxy_refuses_one_address_beyond_its_connections_and_serves_another(haproxy_server: LiveServer) -> None:
    held = [_connect(haproxy_server, "127.0.0.2", HEALTH) for _ in range(PER_CLIENT)]
    try:
        assert all(_reply(sock).endswith(b" 200 OK") for sock in held)  # kept alive: each still counts
        with _connect(haproxy_server, "127.0.0.2", HEALTH) as refused:
            assert _reply(refused) == b""
        with _connect(haproxy_server, "127.0.0.3", HEALTH) as other:
            assert _reply(other).endswith(b" 200 OK")
        held.pop().close()
        time.sleep(0.2)
        with _connect(haproxy_server, "127.0.0.2", HEALTH) as again:  # a count, not a ban
            assert _reply(again).endswith(b" 200 OK")
    finally:
        for sock in held:
            sock.close()
