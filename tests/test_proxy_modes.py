"""`http.proxy`: Ray Serve's Python proxy (shipped) and its HAProxy ingress answer alike, errors included."""
from __future__ import annotations

import socket
from itertools import takewhile
from pathlib import Path

import httpx
import pytest

from loadtests.photos import digit_pngs, jpeg_photos
from loadtests.procs import process_tree, title
from loadtests.server import LiveServer, default_config, free_port
from serve.config import ConfigError, parse_config
from serve.ray_env import local_haproxy_files, local_haproxy_ports, serve_environment

pytestmark = pytest.mark.integration


def test_haproxy_turns_on_ray_serves_high_throughput_mode():
    env = serve_environment("haproxy")
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"


def test_ray_proxy_turns_both_flags_off_whatever_the_environment_says():
    env = serve_environment("ray")
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "0"


def test_local_haproxy_ports_are_distinct_free_and_outside_the_ephemeral_range():
    ports = [int(p) for p in local_haproxy_ports(http_port=8000).values()]
    assert len(set(ports)) == 2 and all(p < 32768 for p in ports)
    for port in ports:
        with socket.socket() as s:
            s.bind(("0.0.0.0", port))


def test_local_haproxy_files_all_lie_in_the_given_directory(tmp_path):
    paths = local_haproxy_files(tmp_path)
    assert len(paths) == 5 and all(Path(p).parent == tmp_path or Path(p) == tmp_path for p in paths.values())


def test_unknown_proxy_is_a_config_error():
    with pytest.raises(ConfigError, match=r"http\.proxy"):
        parse_config({"models": [{"name": "a"}], "http": {"proxy": "nginx"}})


@pytest.fixture(scope="module")
def haproxy_server(tmp_path_factory) -> LiveServer:
    config = default_config(free_port())
    config["http"]["proxy"] = "haproxy"
    live = LiveServer(config, tmp_path_factory.mktemp("haproxy-server"))
    live.start()
    yield live
    live.stop()


def _answer(url: str, image: bytes, content_type: str, model: str) -> tuple[int, dict]:
    answer = httpx.post(f"{url}/classify", content=image, headers={"Content-Type": content_type},
                        params={"model": model, "k": 5}, timeout=60)
    body = answer.json()
    body.pop("request_id", None)
    return answer.status_code, body


def test_the_shipped_server_answers_through_rays_proxy_and_the_other_through_haproxy(
        server: LiveServer, haproxy_server: LiveServer) -> None:
    assert len(_serving_haproxies(haproxy_server)) == 1
    assert not _haproxy_processes(server)


def _haproxy_processes(live: LiveServer) -> list[int]:
    """By the executable's name: the server's own command line may mention haproxy in its config path."""
    return [p for p in process_tree(live.pid) if Path(title(p).split(" ")[0]).name == "haproxy"]


def _serving_haproxies(live: LiveServer) -> list[int]:
    """Those no other haproxy replaces: Ray reloads HAProxy by starting a new one with `-sf <old pids>`,
    and the old one lives on until its connections drain."""
    running = _haproxy_processes(live)
    replaced = {arg for p in running for arg in _replaced_pids(p)}
    return [p for p in running if p not in replaced]


def _replaced_pids(pid: int) -> list[int]:
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except FileNotFoundError:  # it finished draining meanwhile
        return []
    if "-sf" not in args:
        return []
    return [int(a) for a in takewhile(str.isdigit, args[args.index("-sf") + 1:])]


@pytest.mark.parametrize("image, content_type, model", [
    (digit_pngs()[0], "image/png", "seresnet20_digits"),
    (jpeg_photos()[1], "image/jpeg", "resnext20_digits"),
    (b"not an image at all", "image/png", "seresnet20_digits"),  # 400
    (digit_pngs()[1], "image/png", "no_such_model"),  # 404
])
def test_both_front_doors_give_identical_answers(server: LiveServer, haproxy_server: LiveServer,
                                                 image: bytes, content_type: str, model: str) -> None:
    assert _answer(haproxy_server.url, image, content_type, model) == _answer(server.url, image, content_type, model)


def test_haproxy_keeps_its_files_in_a_directory_of_the_server_that_goes_with_it(tmp_path) -> None:
    config = default_config(free_port())
    config["http"]["proxy"] = "haproxy"
    with LiveServer(config, tmp_path) as live:
        (haproxy,) = _serving_haproxies(live)
        args = Path(f"/proc/{haproxy}/cmdline").read_bytes().split(b"\0")
        config_file = Path(args[args.index(b"-f") + 1].decode())
        own_dir = config_file.parent.parent  # Ray adds the node id
        assert own_dir.name.startswith("resfam-hap-") and (config_file.parent / "admin.sock").exists()
    assert not own_dir.exists()
