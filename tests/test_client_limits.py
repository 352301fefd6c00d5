"""The slow-client limits without a server: the body pace, the client address behind proxies, the per-client
count (the live behaviour, in both front-door modes, is tests/test_slow_clients.py)."""
from __future__ import annotations

import asyncio
import ipaddress

import pytest
from starlette.requests import Request

from serve.api.body import BodyPace, read_body
from serve.api.client_limit import ClientLimiter, client_address
from serve.config import HttpOptions
from serve.errors import BadRequest, RequestTimeout


def _request(chunks: list[tuple[float, bytes]]) -> Request:
    """A request whose body arrives as (delay before it in seconds, bytes) pairs."""
    pending = list(chunks)

    async def receive() -> dict:
        delay, data = pending.pop(0)
        await asyncio.sleep(delay)
        return {"type": "http.request", "body": data, "more_body": bool(pending)}

    return Request({"type": "http", "method": "POST", "path": "/classify", "query_string": b"", "headers": []},
                   receive)


def _read(chunks: list[tuple[float, bytes]], pace: BodyPace) -> bytes:
    return asyncio.run(read_body(_request(chunks), 1 << 20, pace))


def test_a_body_that_keeps_pace_is_read_whole():
    pace = BodyPace(idle_s=0.3, grace_s=0.2, min_rate=10_000)
    assert _read([(0.1, b"a" * 3000), (0.2, b"b" * 3000), (0.2, b"c")], pace) == b"a" * 3000 + b"b" * 3000 + b"c"


def test_a_pause_longer_than_idle_is_a_timeout_counted_once():
    cut = []
    pace = BodyPace(idle_s=0.2, grace_s=5, min_rate=1, on_timeout=lambda: cut.append(1))
    with pytest.raises(RequestTimeout, match="4 bytes"):
        _read([(0, b"\x89PNG"), (1.0, b"late")], pace)
    assert cut == [1]


def test_a_trickle_is_cut_after_the_grace_although_it_never_pauses_long():
    pace = BodyPace(idle_s=1, grace_s=0.3, min_rate=1000)
    with pytest.raises(RequestTimeout):
        _read([(0.15, b"x")] * 20, pace)  # 1 byte every 0.15 s: never idle, far below 1000 bytes/s


def test_shipped_pace_lets_a_5_mb_photo_over_3g_through():
    """~48 kB/s (384 kbit/s) for a 5 MB photo: ~105 s needed, and the pace allows more at every moment."""
    pace = BodyPace.from_options(HttpOptions())
    received, rate = 0, 48_000
    for second in range(1, 106):
        assert pace.wait_s(second, received) > 0
        received += rate
    assert received >= 5_000_000


def _scope(peer: str, forwarded: str | None = None) -> dict:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    return {"type": "http", "client": (peer, 5000), "headers": headers}


BALANCER = [ipaddress.ip_network("10.0.0.0/24"), ipaddress.ip_network("127.0.0.1/32")]


def test_x_forwarded_for_counts_only_behind_a_trusted_proxy():
    assert client_address(_scope("203.0.113.9", "198.51.100.1"), BALANCER) == "203.0.113.9"
    assert client_address(_scope("10.0.0.5", "198.51.100.1"), BALANCER) == "198.51.100.1"


def test_the_client_cannot_choose_its_address_by_writing_x_forwarded_for():
    """The balancer appends the address it saw: entries to its left are the client's own words."""
    assert client_address(_scope("127.0.0.1", "1.2.3.4, 198.51.100.1, 10.0.0.5"), BALANCER) == "198.51.100.1"


def test_no_peer_is_not_limited_and_loopback_only_when_asked():
    assert ClientLimiter(4, False, []).key({"type": "http", "headers": []}) is None
    assert ClientLimiter(4, False, []).key(_scope("127.0.0.2")) is None
    assert ClientLimiter(4, True, []).key(_scope("127.0.0.2")) == "127.0.0.2"
    assert ClientLimiter(0, True, []).key(_scope("203.0.113.9")) is None


def test_behind_haproxy_the_node_address_it_connects_from_is_trusted():
    behind = ClientLimiter.from_options(HttpOptions(proxy="haproxy", limit_loopback=True), node_ip="192.0.2.4")
    assert behind.key(_scope("192.0.2.4", "198.51.100.1")) == "198.51.100.1"
    assert behind.key(_scope("192.0.2.4", "127.0.0.20")) == "127.0.0.20"  # a local client is a client
    assert behind.key(_scope("192.0.2.4")) is None  # HAProxy itself, naming no one
    direct = ClientLimiter.from_options(HttpOptions(proxy="ray", limit_loopback=True), node_ip="192.0.2.4")
    assert direct.key(_scope("192.0.2.4", "198.51.100.1")) == "192.0.2.4"


def test_a_trusted_balancer_is_limited_only_by_the_clients_it_names():
    limiter = ClientLimiter(4, True, BALANCER)
    assert limiter.key(_scope("10.0.0.5")) is None and limiter.key(_scope("127.0.0.1")) is None
    assert limiter.key(_scope("10.0.0.5", "198.51.100.1")) == "198.51.100.1"
    assert limiter.key(_scope("10.0.0.5", "10.0.0.7")) is None  # only balancers on the way: no client named


def test_the_limit_is_per_address_and_released():
    refused = []
    limiter = ClientLimiter(2, False, [], on_refusal=lambda: refused.append(1))
    assert limiter.admit("a") and limiter.admit("a") and not limiter.admit("a") and limiter.admit("b")
    limiter.release("a")
    assert limiter.admit("a") and refused == [1]
    for key in ("a", "a", "b"):
        limiter.release(key)
    assert limiter.inflight == {}


def test_a_client_gone_mid_body_is_its_error_not_a_500():
    messages = [{"type": "http.request", "body": b"\x89PNG", "more_body": True}, {"type": "http.disconnect"}]

    async def receive() -> dict:
        return messages.pop(0)

    request = Request({"type": "http", "method": "POST", "path": "/classify", "query_string": b"", "headers": []},
                      receive)
    with pytest.raises(BadRequest, match="went away after 4 bytes"):
        asyncio.run(read_body(request, 1024, BodyPace(idle_s=1, grace_s=1, min_rate=1)))
