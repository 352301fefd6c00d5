"""`http.proxy`: Ray Serve's Python proxy (shipped) and its HAProxy ingress answer alike, errors included."""
from __future__ import annotations

import socket

import httpx
import pytest

from loadtests.photos import digit_pngs, jpeg_photos
from loadtests.procs import process_tree, title
from loadtests.server import LiveServer, default_config, free_port
from serve.config import ConfigError, parse_config
from serve.ray_env import local_haproxy_ports, serve_environment

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
    assert any("haproxy" in title(p) for p in process_tree(haproxy_server.pid))
    assert not any("haproxy" in title(p) for p in process_tree(server.pid))


@pytest.mark.parametrize("image, content_type, model", [
    (digit_pngs()[0], "image/png", "seresnet20_digits"),
    (jpeg_photos()[1], "image/jpeg", "resnext20_digits"),
    (b"not an image at all", "image/png", "seresnet20_digits"),  # 400
    (digit_pngs()[1], "image/png", "no_such_model"),  # 404
])
def test_both_front_doors_give_identical_answers(server: LiveServer, haproxy_server: LiveServer,
                                                 image: bytes, content_type: str, model: str) -> None:
    assert _answer(haproxy_server.url, image, content_type, model) == _answer(server.url, image, content_type, model)
