"""Slow clients (issue 17) against a live server in both front-door modes: stalled bodies get 408 and are
closed within http.body_* limits, slow headers and unread answers do not stop anyone else, normal requests keep
succeeding meanwhile, and no ongoing-request slot is leaked. Ray's proxy (its guard, serve/cluster/proxy_guard.py)
also cuts unfinished headers after http.header_timeout_s and closes an address's connections beyond
http.max_connections_per_client as they are accepted."""
from __future__ import annotations

import re
import time
from typing import Callable

import httpx
import pytest

from loadtests.generator import Shot, run_closed
from loadtests.scenarios.common import digits_shots
from loadtests.server import LiveServer, default_config, free_port
from loadtests.slow_clients import Attack, Stalled

pytestmark = pytest.mark.integration

LIMITS = {"body_idle_timeout_s": 2, "body_timeout_s": 2, "keep_alive_timeout_s": 3, "client_idle_timeout_s": 4,
          "header_timeout_s": 2}
PER_CLIENT = 32
CONNECTIONS_PER_CLIENT = 48  # Ray's proxy (serve/cluster/proxy_guard.py); above what one SOURCES address opens
# Ray's proxy hands the ingress the client's address; HAProxy names it in X-Forwarded-For (cluster/haproxy_config.py).
# 127.0.0.1, where the normal traffic comes from, is listed as a balancer: trusted proxies are never held to
# the per-address limits (test_no_slot_is_leaked_after_the_attack opens 256 connections from it at once).
CLIENT_LIMIT = {"max_inflight_per_client": PER_CLIENT, "limit_loopback": True,
                "max_connections_per_client": CONNECTIONS_PER_CLIENT, "trusted_proxies": ["127.0.0.1"]}
# The ingress's ongoing-request slots (serve/api/ingress.py): more stalled bodies than this at once.
SLOTS = 256
SOURCES = [f"127.0.0.{i}" for i in range(2, 12)]  # 10 attacker addresses, 30 bodies each: under PER_CLIENT


@pytest.fixture(scope="module", params=["ray", "haproxy"])
def slow_server(request, tmp_path_factory) -> LiveServer:
    config = default_config(free_port())
    config["http"].update(proxy=request.param, **LIMITS, **CLIENT_LIMIT)
    live = LiveServer(config, tmp_path_factory.mktemp(f"slow-{request.param}"))
    live.start()
    yield live
    live.stop()


def _metric(url: str, name: str, labels: str | None = None) -> float:
    """The sum of `name`'s samples, or of the one whose labels read exactly `labels` (e.g. 'stage="headers"')."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    pattern = r"(?:{[^}]*})?" if labels is None else re.escape(f"{{{labels}}}")
    return sum(float(v) for v in re.findall(rf"^{re.escape(name)}{pattern} (\S+)$", text, re.M))


def _eventually(read: Callable[[], float], at_least: float, within_s: float = 10) -> float:
    """Metrics arrive by push (every 0.5 s from each process): read until `at_least` or `within_s` passed."""
    deadline = time.monotonic() + within_s
    while (value := read()) < at_least and time.monotonic() < deadline:
        time.sleep(0.5)
    return value


def test_stalled_clients_are_cut_while_normal_traffic_goes_on(slow_server: LiveServer):
    proxy = slow_server.config["http"]["proxy"]
    timeouts_before = _metric(slow_server.url, "resfam_client_timeouts_total")
    body_timeouts_before = _metric(slow_server.url, "resfam_client_timeouts_total", 'stage="body"')
    header_timeouts_before = _metric(slow_server.url, "resfam_client_timeouts_total", 'stage="headers"')
    attack = Attack(slow_server.port, {"body": 300, "header": 30, "reader": 10}, duration_s=16, sources=SOURCES,
                    repeat=False)
    with attack:
        time.sleep(1)  # the stalled bodies hold every slot now
        normal = run_closed(slow_server.url, digits_shots(), 4, 8, timeout_s=20).summary()
    bodies, headers = attack.of("body"), attack.of("header")
    assert len(bodies) == 300 and len(headers) == 30
    # Normal requests all succeed; the worst waited for stalled bodies ahead of it to be cut (2 s + queueing).
    assert normal["errors"] == 0 and normal["requests"] > 20, normal
    assert normal["max_ms"] < 10_000, normal
    # Every stalled body is answered 408 and closed in time. Ray's proxy streams the body to the ingress, which
    # cuts it after 2 s of grace (plus, beyond the 256th, the wait for a slot) and counts it. HAProxy holds the
    # request until its body is complete (`http-request wait-for-body`), so a stalled one never takes a slot and
    # HAProxy itself answers 408 (in the ingress's JSON shape) after header_timeout_s; the ingress never sees it.
    assert all(b.closed and b.status == 408 for b in bodies), {(b.answer, b.closed) for b in bodies
                                                               if not (b.closed and b.status == 408)}
    assert max(b.held_s for b in bodies) < 10, max(b.held_s for b in bodies)
    if proxy == "haproxy":
        def cut_in_time(b: Stalled) -> bool:
            return b.closed and b.status == 408 and b.held_s < LIMITS["header_timeout_s"] + 2

        # A stalled body's 408 is in the ingress's JSON shape; unfinished headers get HAProxy's own page.
        late = [b for b in bodies + headers if not cut_in_time(b) or (b in bodies and b'"request_timeout"' not in b.answer)]
        assert not late, late
        time.sleep(1)  # metrics arrive by push, every 0.5 s
        assert _metric(slow_server.url, "resfam_client_timeouts_total", 'stage="body"') == body_timeouts_before
    else:
        assert _metric(slow_server.url, "resfam_client_timeouts_total") - timeouts_before >= SLOTS
        # the proxy guard's header deadline: 408, closed, counted
        late = [h for h in headers if not (h.closed and h.status == 408 and h.held_s < LIMITS["header_timeout_s"] + 2)]
        assert not late, late
        counted = _eventually(lambda: _metric(slow_server.url, "resfam_client_timeouts_total", 'stage="headers"'),
                              header_timeouts_before + len(headers))
        assert counted - header_timeouts_before >= len(headers)


def test_no_slot_is_leaked_after_the_attack(slow_server: LiveServer):
    """Every slot back: as many requests at once as the ingress has slots all succeed (GET /models, which
    only the ingress answers: classifying 256 at once would meet the model's own queue limit first)."""
    burst = run_closed(slow_server.url, lambda i: Shot("/models", method="GET"), SLOTS, 3, timeout_s=30).summary()
    assert burst["errors"] == 0 and burst["requests"] >= SLOTS, burst
    classified = run_closed(slow_server.url, digits_shots(), 16, 2, timeout_s=30).summary()
    assert classified["errors"] == 0 and classified["requests"] >= 16, classified


def test_an_idle_keep_alive_connection_is_closed(slow_server: LiveServer):
    with httpx.Client(base_url=slow_server.url, timeout=10) as client:
        first = client.get("/v2/health/live")
        time.sleep(LIMITS["keep_alive_timeout_s"] + 2)
        second = client.get("/v2/health/live")  # httpx finds its pooled connection closed and opens another
    assert first.status_code == second.status_code == 200
    assert first.extensions["network_stream"] is not second.extensions["network_stream"]


def test_one_address_beyond_its_limit_is_refused_at_once(slow_server: LiveServer):
    """Bodies that stall after 32 kB: beyond what HAProxy buffers, so in both modes they reach the ingress and hold
    its slots until it cuts them; the address's requests over its limit are refused at once (by Ray's proxy, or
    behind HAProxy by the ingress, which trusts HAProxy's X-Forwarded-For)."""
    limited_before = _metric(slow_server.url, "resfam_client_limited_total")
    attack = Attack(slow_server.port, {"partial": PER_CLIENT + 8}, duration_s=8, sources=["127.0.0.20"],
                    repeat=False)
    with attack:
        time.sleep(0.5)
        normal = run_closed(slow_server.url, digits_shots(), 2, 2, timeout_s=10).summary()  # from 127.0.0.1
    statuses = sorted(b.status for b in attack.results)
    assert statuses == [408] * PER_CLIENT + [429] * 8, statuses
    # Answered at once and closed (HAProxy closes once the rest of the request has had its time).
    refused = [b for b in attack.results if b.status == 429]
    assert all(b.answered_s < 1 and b.closed for b in refused), [(b.answered_s, b.held_s, b.closed) for b in refused]
    assert normal["errors"] == 0, normal
    assert _metric(slow_server.url, "resfam_client_limited_total") - limited_before == 8


def test_one_address_beyond_its_connection_limit_is_closed_on_accept(slow_server: LiveServer):
    """Ray's proxy: an address holding max_connections_per_client connections has its next ones closed at once,
    before anything is read, while another address is served."""
    if slow_server.config["http"]["proxy"] != "ray":
        pytest.skip("HAProxy mode: HAProxy's own limits (serve/cluster/ HAProxy config)")
    refused_before = _metric(slow_server.url, "resfam_client_connections_refused_total")
    extra = 8
    attack = Attack(slow_server.port, {"header": CONNECTIONS_PER_CLIENT + extra}, duration_s=6,
                    sources=["127.0.0.30"], repeat=False)
    with attack:
        time.sleep(0.5)
        normal = run_closed(slow_server.url, digits_shots(), 2, 2, timeout_s=10).summary()  # from 127.0.0.1
    refused = [h for h in attack.results if h.status == 0]
    cut = [h for h in attack.results if h.status == 408]
    assert len(refused) == extra and len(cut) == CONNECTIONS_PER_CLIENT, sorted((h.status, h.held_s) for h in attack.results)
    assert all(h.closed and h.held_s < 1 for h in refused), refused
    assert normal["errors"] == 0 and normal["requests"] > 0, normal
    counted = _eventually(lambda: _metric(slow_server.url, "resfam_client_connections_refused_total"),
                          refused_before + extra)
    assert counted - refused_before == extra
