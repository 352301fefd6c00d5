"""serve/cluster/proxy_guard.py: the header deadline and per-address connection limit it puts on uvicorn, on a real
uvicorn server with each HTTP protocol implementation (no Ray), and the Ray and uvicorn internals it relies on,
so that an upgrade that moves them fails here rather than silently disabling the guard."""
from __future__ import annotations

import asyncio
import inspect
import socket
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator

import pytest
import uvicorn
from uvicorn.config import HTTP_PROTOCOLS
from uvicorn.importer import import_from_string
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ray.serve._private.http_util import _apply_middlewares

from serve.cluster import proxy_guard
from serve.cluster.proxy_guard import GuardLimits, GuardReport, guarded
from serve.cluster.ray_env import front_door_environment
from serve.config import HttpOptions

TIMEOUT_S = 0.5
KEEP_ALIVE_S = 5
REQUEST = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"


async def _ok(scope, receive, send) -> None:
    """200 "ok" to any request; a WebSocket is accepted and echoes."""
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": message["text"]})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@asynccontextmanager
async def _server(base: type, limits: GuardLimits, app=_ok) -> AsyncIterator[tuple[int, list]]:
    """A uvicorn server on a free loopback port using `base` with the guard, and `app` wrapped in the guard's
    middleware as Ray's proxy wraps its own app; yields the port and the snapshots its report pushed."""
    pushed: list = []

    async def push(source, snapshot) -> None:
        pushed.append(snapshot)

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    report = GuardReport(push)
    wrapped = _apply_middlewares(app, proxy_guard.in_flight_limit(limits, report))
    config = uvicorn.Config(wrapped, http=guarded(base, limits, report), lifespan="off", log_level="error",
                            timeout_keep_alive=KEEP_ALIVE_S)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield sock.getsockname()[1], pushed
    finally:
        server.should_exit = True
        await task


async def _connect(port: int, source: str = "127.0.0.1") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def _until_closed(reader: asyncio.StreamReader, limit_s: float) -> tuple[bytes, float]:
    """Everything the server sent until it closed, and when it closed (seconds from now)."""
    started = time.monotonic()
    answer = await asyncio.wait_for(reader.read(), limit_s)
    return answer, time.monotonic() - started


def _counted(pushed: list, metric: str, labels: dict | None = None) -> float:
    return sum(value for snapshot in pushed[-1:] for name, _, _, samples in snapshot
               if name == metric for sample, sample_labels, value in samples
               if sample.endswith("_total") and sample_labels == (labels or {}))


def _timeouts(pushed: list) -> float:
    return _counted(pushed, "resfam_client_timeouts", {"stage": "headers"})


PROTOCOLS = pytest.mark.parametrize("base", [HttpToolsProtocol, H11Protocol], ids=["httptools", "h11"])


@PROTOCOLS
def test_unfinished_headers_get_408_and_are_closed(base):
    async def scenario() -> None:
        async with _server(base, GuardLimits(TIMEOUT_S, 0, False)) as (port, pushed):
            silent_reader, _ = await _connect(port)  # connects and sends nothing
            reader, writer = await _connect(port)
            writer.write(REQUEST[:20])
            answer, after_s = await _until_closed(reader, 5)
            assert answer.startswith(b"HTTP/1.1 408 ") and b"request_timeout" in answer, answer
            assert TIMEOUT_S - 0.1 < after_s < TIMEOUT_S + 1
            assert (await _until_closed(silent_reader, 2))[0].startswith(b"HTTP/1.1 408 ")
            await asyncio.sleep(0.7)  # the report pushes every 0.5 s
            assert _timeouts(pushed) == 2

    asyncio.run(scenario())


@PROTOCOLS
def test_a_kept_alive_connection_waits_for_keep_alive_then_its_next_headers_have_the_deadline(base):
    async def scenario() -> None:
        async with _server(base, GuardLimits(TIMEOUT_S, 0, False)) as (port, _):
            reader, writer = await _connect(port)
            writer.write(REQUEST)
            assert (await reader.readuntil(b"ok")).startswith(b"HTTP/1.1 200 ")
            await asyncio.sleep(TIMEOUT_S * 3)  # idle between requests: keep_alive_timeout_s's business
            writer.write(REQUEST)
            assert (await asyncio.wait_for(reader.readuntil(b"ok"), 2)).startswith(b"HTTP/1.1 200 ")
            for byte in REQUEST[:4]:  # the next request trickles in: cut TIMEOUT_S after its first byte
                writer.write(bytes([byte]))
                await asyncio.sleep(TIMEOUT_S / 8)
            answer, _ = await _until_closed(reader, 3)
            assert answer.startswith(b"HTTP/1.1 408 "), answer

    asyncio.run(scenario())


@PROTOCOLS
def test_an_address_over_its_connection_limit_is_closed_at_once_while_others_are_served(base):
    async def scenario() -> None:
        async with _server(base, GuardLimits(30, 2, True)) as (port, _):
            held = [await _connect(port, "127.0.0.2") for _ in range(2)]
            reader, writer = await _connect(port, "127.0.0.2")
            writer.write(REQUEST)
            answer, after_s = await _until_closed(reader, 2)
            assert answer == b"" and after_s < 0.5  # closed on accept, nothing read or answered
            other_reader, other_writer = await _connect(port, "127.0.0.3")
            other_writer.write(REQUEST)
            assert (await asyncio.wait_for(other_reader.readuntil(b"ok"), 2)).startswith(b"HTTP/1.1 200 ")
            held[0][1].close()  # one of the two goes: the address may connect again
            await asyncio.sleep(0.1)
            reader, writer = await _connect(port, "127.0.0.2")
            writer.write(REQUEST)
            assert (await asyncio.wait_for(reader.readuntil(b"ok"), 2)).startswith(b"HTTP/1.1 200 ")

    asyncio.run(scenario())


@PROTOCOLS
def test_a_websocket_outlives_the_header_deadline_and_leaves_the_connection_count(base):
    from websockets.asyncio.client import connect

    async def scenario() -> None:
        async with _server(base, GuardLimits(TIMEOUT_S, 1, True)) as (port, _):
            async with connect(f"ws://127.0.0.1:{port}/") as socket_:
                await asyncio.sleep(TIMEOUT_S * 3)
                await socket_.send("still here")
                assert await asyncio.wait_for(socket_.recv(), 2) == "still here"
                reader, writer = await _connect(port)  # the upgraded connection no longer counts
                writer.write(REQUEST)
                assert (await asyncio.wait_for(reader.readuntil(b"ok"), 2)).startswith(b"HTTP/1.1 200 ")

    asyncio.run(scenario())


class Held:
    """An app that answers 200 only once `release` is set; a GET to /quick answers at once."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["path"] != "/quick":
            self.started += 1
            await self.release.wait()
        await _ok(scope, receive, send)


async def _answer_head(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)


@PROTOCOLS
def test_an_address_over_its_in_flight_limit_gets_429_from_the_proxy_without_reaching_the_app(base):
    async def scenario() -> None:
        app = Held()
        async with _server(base, GuardLimits(30, 0, True, max_inflight_per_client=2), app) as (port, pushed):
            held = [await _connect(port, "127.0.0.2") for _ in range(2)]
            for _, writer in held:
                writer.write(REQUEST)
            while app.started < 2:
                await asyncio.sleep(0.01)
            reader, writer = await _connect(port, "127.0.0.2")
            started = time.monotonic()
            writer.write(b"POST /classify HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n")  # no body
            answer, _ = await _until_closed(reader, 2)
            assert time.monotonic() - started < 0.5 and app.started == 2  # refused unread, never forwarded
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 429 ") and b"retry-after: 1" in head.lower(), head
            assert b"connection: close" in head.lower() and b'"too_many_requests"' in body, answer
            other_reader, other_writer = await _connect(port, "127.0.0.3")  # another address is not held back
            other_writer.write(REQUEST.replace(b"GET / ", b"GET /quick "))
            assert (await _answer_head(other_reader)).startswith(b"HTTP/1.1 200 ")
            app.release.set()
            for held_reader, _ in held:  # an answer out frees its count
                assert (await _answer_head(held_reader)).startswith(b"HTTP/1.1 200 ")
            again = [await _connect(port, "127.0.0.2") for _ in range(2)]
            for again_reader, again_writer in again:
                again_writer.write(REQUEST)
                assert (await _answer_head(again_reader)).startswith(b"HTTP/1.1 200 ")
            await asyncio.sleep(0.7)  # the report pushes every 0.5 s
            assert _counted(pushed, "resfam_client_limited") == 1

    asyncio.run(scenario())


def test_without_an_in_flight_limit_the_proxy_adds_no_middleware():
    assert proxy_guard.in_flight_limit(GuardLimits(5, 0, True), GuardReport()) == []


def test_which_addresses_are_limited():
    limits = GuardLimits(5, 2, False, (proxy_guard.ipaddress.ip_network("10.0.0.0/8"),))
    assert limits.limits_peer("192.0.2.7") and not limits.limits_peer("127.0.0.2")
    assert not limits.limits_peer("10.1.2.3")  # a trusted balancer carries everyone's connections
    assert not GuardLimits(5, 0, True).limits_peer("192.0.2.7")  # 0: no limit
    assert GuardLimits(5, 2, True).limits_peer("127.0.0.2")


def test_the_limits_reach_the_proxy_through_its_environment_in_ray_mode_only():
    http = HttpOptions(header_timeout_s=3, max_connections_per_client=9, limit_loopback=True,
                       trusted_proxies=["10.0.0.0/8"], max_inflight_per_client=7)
    env = front_door_environment(http)
    assert env[proxy_guard.HOOK_ENV] == proxy_guard.CALLBACK
    assert GuardLimits.from_environment(env) == GuardLimits.from_options(http)
    assert proxy_guard.HOOK_ENV not in front_door_environment(HttpOptions(proxy="haproxy"))
    assert import_from_string(proxy_guard.CALLBACK) is proxy_guard.install


def test_install_points_uvicorns_auto_protocol_at_the_guarded_class(monkeypatch):
    monkeypatch.setitem(HTTP_PROTOCOLS, "auto", HTTP_PROTOCOLS["auto"])
    monkeypatch.setattr(proxy_guard, "protocol", None)
    installed = proxy_guard.install_into_uvicorn(GuardLimits(5, 0, False))
    config = uvicorn.Config(_ok)  # as Ray's proxy builds it: no http=
    config.load()
    assert config.http_protocol_class is installed
    assert issubclass(installed, HttpToolsProtocol)  # httptools is installed, so "auto" is httptools


def test_the_ray_and_uvicorn_internals_the_guard_relies_on_are_still_there():
    from ray.serve._private import constants, http_util, proxy, replica

    assert constants.RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH is None or isinstance(
        constants.RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH, str)
    assert "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH" in inspect.getsource(http_util.configure_http_middlewares)
    actor_init = inspect.getsource(proxy).split("class ProxyActor(", 1)[1].split("    def __init__(", 1)[1]
    assert "configure_http_middlewares(" in actor_init.split("\n    def ", 1)[0]  # before uvicorn starts
    assert "configure_http_middlewares" in inspect.getsource(replica)  # direct ingress: install() skips it
    assert proxy_guard.PROXY_ACTOR_PREFIX == f"{constants.SERVE_PROXY_NAME}-"
    config_call = inspect.getsource(http_util.start_asgi_http_server).split("uvicorn.Config(", 1)[1].split(")\n")[0]
    assert "http=" not in config_call  # Ray's uvicorn loads HTTP_PROTOCOLS["auto"]
    assert HTTP_PROTOCOLS["auto"] == "uvicorn.protocols.http.auto:AutoHTTPProtocol"
    for base in (HttpToolsProtocol, H11Protocol):
        for method in ("connection_made", "data_received", "connection_lost", "handle_websocket_upgrade"):
            assert method in vars(base), (base, method)
        source = inspect.getsource(base)
        for attribute in ("self.transport =", "self.client =", "self.loop =", "self.cycle = RequestResponseCycle(",
                          "response_complete"):
            assert attribute in source, (base, attribute)
