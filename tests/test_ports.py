"""A server fails fast on a port another process listens on, and says who holds it."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from loadtests.server import ROOT, LiveServer, free_port
from serve.cluster.ports import PortBusy, ensure_port_free, listeners, strangers_on_port


def reuseport_listener(port: int) -> socket.socket:
    """What Ray's proxy (asyncio) and HAProxy do: SO_REUSEADDR, and SO_REUSEPORT, which lets a second such
    socket in."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def test_a_free_port_passes_and_a_held_one_names_its_holder():
    port = free_port()
    ensure_port_free("127.0.0.1", port)
    with reuseport_listener(port):
        assert [listener.pid for listener in listeners(port)] == [os.getpid()]
        with pytest.raises(PortBusy, match=rf"127\.0\.0\.1:{port} is already in use by pid {os.getpid()} \("):
            ensure_port_free("127.0.0.1", port)
        assert strangers_on_port("127.0.0.1", port, lambda: {os.getpid()}) == []
        assert [s.pid for s in strangers_on_port("127.0.0.1", port, set)] == [os.getpid()]
        seen = iter([set(), {os.getpid()}])  # a stranger at the first look, ours by the second: a passing one
        assert strangers_on_port("127.0.0.1", port, lambda: next(seen), looks=2, apart_s=0) == []
    ensure_port_free("127.0.0.1", port)


def test_a_wildcard_listener_holds_the_loopback_port_too():
    port = free_port()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("0.0.0.0", port))
        sock.listen()
        assert [listener.pid for listener in listeners(port, "127.0.0.1")] == [os.getpid()]
        with pytest.raises(PortBusy):
            ensure_port_free("127.0.0.1", port)


def test_a_port_left_in_time_wait_is_free():
    """A server that just stopped leaves closed connections behind; they must not block the next start."""
    port = free_port()
    with reuseport_listener(port) as server:
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the server side closes first: its end waits in TIME_WAIT
        client.close()
    ensure_port_free("127.0.0.1", port)


def second_start(config_path) -> subprocess.CompletedProcess:
    """`python -m serve` as a user would type it, on a config whose port a running server holds."""
    return subprocess.run([sys.executable, "-m", "serve", "--config", str(config_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def assert_refused_and_first_unharmed(live: LiveServer, holder: str) -> None:
    started = time.monotonic()
    result = second_start(live.config_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert time.monotonic() - started < 30
    assert f"error: 127.0.0.1:{live.port} is already in use by pid" in result.stderr
    assert holder in result.stderr
    assert "ready" not in result.stdout
    assert live.ready()


@pytest.mark.integration
def test_a_second_server_on_the_shipped_servers_port_fails_at_once(server: LiveServer):
    assert_refused_and_first_unharmed(server, "haproxy")  # the shipped front door (Ray's proxy: test_proxy_modes)
