"""A guard for Ray's own HTTP proxy (`http.proxy: ray`), installed through Ray's proxy callback hook: a header
deadline and a per-client-address connection limit, which uvicorn in Ray's proxy lacks, and the ingress's
per-address in-flight limit applied in the proxy itself. Without them a client that sends half its headers (or
nothing) holds its connection forever, one address may open as many as it likes until the proxy runs out of
descriptors, and every request over the in-flight limit still costs a trip through the proxy, the router and the
ingress before its 429 (that trip, ~30 a second from 370 attackers, cut normal throughput to 0.73x here).

How it gets there. Ray Serve 2.60 calls the function named by RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH (read when
`ray.serve._private.constants` is imported) from `http_util.configure_http_middlewares`, in every process that
starts a Serve HTTP server: the ProxyActor's `__init__` before it starts uvicorn, and in HAProxy mode also each
direct-ingress replica and the head node's fallback proxy (whose peer is HAProxy, so a per-address limit would put
every client in one bucket). `install` therefore acts only in a ProxyActor named SERVE_PROXY_ACTOR-<node id>, and
`front_door_environment` sets the hook in Ray-proxy mode only. The callback returns Starlette middlewares, which
run once a request's headers are complete: the right moment for the in-flight limit (the ingress's own
ClientLimitMiddleware with a limiter of the proxy's), too late for the other two. For those `install` points
uvicorn's "auto" HTTP protocol, in this process only, at a subclass of the class it named.

The uvicorn (0.54) internals this relies on, checked by tests/test_proxy_guard.py so that an upgrade that moves
them fails loudly: `uvicorn.config.HTTP_PROTOCOLS["auto"]` is the "module:attribute" Ray's `uvicorn.Config`
(which passes no `http=`) loads when its server starts; both protocol classes (httptools and h11) keep
`transport`, `client` (the peer's (host, port)), `loop`, and `cycle`, replaced by a new RequestResponseCycle when
a request's headers are complete, whose `response_complete` says the previous answer is out; a WebSocket upgrade
goes through `handle_websocket_upgrade`, after which the connection belongs to another protocol object.

The header deadline runs from the moment the connection is accepted, and on a kept-alive connection from the
first byte of the next request (idle time before it is `keep_alive_timeout_s`'s business). A connection whose
headers are late gets 408 with `Connection: close` and is closed. (Bytes of a next request that arrive while an
answer is still going out, i.e. pipelined, start no deadline; uvicorn's keep-alive timeout then bounds them.)
A connection from an address that already holds `max_connections_per_client` is closed as soon as it is accepted,
before anything is read. A request from an address with `max_inflight_per_client` requests in the proxy gets the
ingress's 429 (Retry-After, Connection: close) from its headers alone: not read, not forwarded. Counts are per proxy
process, so per node: a client spread over several nodes' proxies may hold that many on each.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping

from starlette.middleware import Middleware

from serve.api.client_limit import ClientLimiter, ClientLimitMiddleware
from serve.config import HttpOptions
from serve.metrics import MetricsPusher, ServeMetrics, Snapshot

log = logging.getLogger(__name__)

CALLBACK = f"{__name__}:install"
HOOK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
HEADER_TIMEOUT_ENV = "RESFAM_PROXY_HEADER_TIMEOUT_S"
MAX_CONNECTIONS_ENV = "RESFAM_PROXY_MAX_CONNECTIONS_PER_CLIENT"
MAX_INFLIGHT_ENV = "RESFAM_PROXY_MAX_INFLIGHT_PER_CLIENT"
LIMIT_LOOPBACK_ENV = "RESFAM_PROXY_LIMIT_LOOPBACK"
EXEMPT_ENV = "RESFAM_PROXY_EXEMPT"  # comma-separated networks never limited: the trusted balancers
PROXY_ACTOR_PREFIX = "SERVE_PROXY_ACTOR-"  # ray.serve._private.constants.SERVE_PROXY_NAME, plus the node id
METRICS_HUB = "MetricsHub"  # the deployment (serve/runtime/deployments.py) this process pushes its counts to
LOG_EVERY_S = 30.0
_TIMEOUT_BODY = b'{"error": {"code": "request_timeout", "message": "the request headers did not arrive in time"}}'
REQUEST_TIMEOUT = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                   b"content-length: %d\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY))

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class GuardLimits:
    header_timeout_s: float
    max_connections_per_client: int  # 0: no limit
    limit_loopback: bool
    exempt: tuple[Network, ...] = ()
    max_inflight_per_client: int = 0  # 0: no limit

    @classmethod
    def from_options(cls, http: HttpOptions) -> "GuardLimits":
        return cls(http.header_timeout_s, http.max_connections_per_client, http.limit_loopback,
                   tuple(http.trusted_proxies), http.max_inflight_per_client)

    def environment(self) -> dict[str, str]:
        """What Ray's proxy process needs: the hook, and these limits (the proxy never reads our config)."""
        return {HOOK_ENV: CALLBACK, HEADER_TIMEOUT_ENV: f"{self.header_timeout_s:g}",
                MAX_CONNECTIONS_ENV: str(self.max_connections_per_client),
                MAX_INFLIGHT_ENV: str(self.max_inflight_per_client),
                LIMIT_LOOPBACK_ENV: "1" if self.limit_loopback else "0",
                EXEMPT_ENV: ",".join(str(net) for net in self.exempt)}

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> "GuardLimits":
        exempt = tuple(ipaddress.ip_network(n, strict=False) for n in env.get(EXEMPT_ENV, "").split(",") if n)
        return cls(float(env[HEADER_TIMEOUT_ENV]), int(env[MAX_CONNECTIONS_ENV]), env[LIMIT_LOOPBACK_ENV] == "1",
                   exempt, int(env.get(MAX_INFLIGHT_ENV, "0")))

    def client_limiter(self, on_refusal: Callable[[], None]) -> ClientLimiter:
        """The ingress's in-flight limiter, with the proxy's own counts (trusted balancers vouch for
        X-Forwarded-For here as there)."""
        return ClientLimiter(self.max_inflight_per_client, self.limit_loopback, self.exempt, on_refusal)

    def limits_peer(self, host: str) -> bool:
        """Whether connections from `host` count against max_connections_per_client."""
        if self.max_connections_per_client == 0:
            return False
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return True
        return (self.limit_loopback or not ip.is_loopback) and not any(ip in net for net in self.exempt)


class GuardReport:
    """What the guard cut, as resfam_client_timeouts_total{stage="headers"}, resfam_client_connections_refused_total
    and resfam_client_limited_total pushed to the MetricsHub like any replica's, and a log line at most every
    LOG_EVERY_S (an attack must not flood the log)."""

    def __init__(self, push: Callable[[str, Snapshot], Awaitable[Any]] | None = None) -> None:
        self.metrics = ServeMetrics()
        self.pusher = MetricsPusher(self.metrics, push or _push_to_hub)
        self._logged_at = -float("inf")
        self._unlogged: Counter[str] = Counter()

    def count(self, what: str, peer: str) -> None:
        """`what`: "headers" (cut late), "refused" (over the connection limit) or "limited" (over in-flight)."""
        if what == "headers":
            self.metrics.client_timeouts.labels("headers").inc()
        elif what == "refused":
            self.metrics.client_connections_refused.inc()
        else:
            self.metrics.client_limited.inc()
        self.pusher.ensure_started()
        self._unlogged[what] += 1
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY_S:
            log.warning("proxy guard: %d connections cut for late headers, %d refused over the per-address "
                        "limit, %d requests refused over the in-flight limit since the last report (latest from %s)",
                        self._unlogged["headers"], self._unlogged["refused"], self._unlogged["limited"], peer)
            self._logged_at, self._unlogged = now, Counter()


_hub: Any = None


async def _push_to_hub(source: str, snapshot: Snapshot) -> None:
    """Push to the application's MetricsHub, found by name once (in a thread: it asks Ray's controller)."""
    global _hub
    if _hub is None:
        _hub = await asyncio.to_thread(_find_hub)
    await _hub.push.remote(source, snapshot)


def _find_hub() -> Any:
    from ray import serve as ray_serve

    for app_name, app in ray_serve.status().applications.items():
        if METRICS_HUB in app.deployments:
            return ray_serve.get_deployment_handle(METRICS_HUB, app_name=app_name)
    raise LookupError(f"no application has a {METRICS_HUB} deployment")


class GuardedProtocol:
    """Mixed in before uvicorn's HTTP protocol class (see `guarded`); per process, one event loop, no lock."""

    limits: GuardLimits
    report: GuardReport
    connections_by_peer: Counter[str]

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._counted_peer: str | None = None
        self._headers_timer: asyncio.TimerHandle | None = None
        self._awaited_cycle = None
        peer = self.client[0] if self.client else None  # type: ignore[attr-defined]
        if peer is not None and self.limits.limits_peer(peer):
            if self.connections_by_peer[peer] >= self.limits.max_connections_per_client:
                self.report.count("refused", peer)
                transport.close()
                return
            self.connections_by_peer[peer] += 1
            self._counted_peer = peer
        self._start_headers_timer()

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle  # type: ignore[attr-defined]
        if self._headers_timer is None and (cycle is None or cycle.response_complete):
            self._start_headers_timer()  # the first byte of the next request on a kept-alive connection
        super().data_received(data)  # type: ignore[misc]
        if self._headers_timer is not None and self.cycle is not self._awaited_cycle:  # type: ignore[attr-defined]
            self._stop_headers_timer()  # headers complete: a new request cycle began

    def connection_lost(self, exc: Exception | None) -> None:
        self._let_go()
        super().connection_lost(exc)  # type: ignore[misc]

    def handle_websocket_upgrade(self, *args: Any) -> None:
        """The connection passes to uvicorn's WebSocket protocol, which this class never sees close: its headers
        are complete, and it no longer counts against its address."""
        self._let_go()
        super().handle_websocket_upgrade(*args)  # type: ignore[misc]

    def _let_go(self) -> None:
        self._stop_headers_timer()
        if self._counted_peer is not None:
            self.connections_by_peer[self._counted_peer] -= 1
            if not self.connections_by_peer[self._counted_peer]:
                del self.connections_by_peer[self._counted_peer]
            self._counted_peer = None

    def _start_headers_timer(self) -> None:
        self._awaited_cycle = self.cycle  # type: ignore[attr-defined]
        self._headers_timer = self.loop.call_later(  # type: ignore[attr-defined]
            self.limits.header_timeout_s, self._headers_late)

    def _stop_headers_timer(self) -> None:
        if self._headers_timer is not None:
            self._headers_timer.cancel()
            self._headers_timer = None

    def _headers_late(self) -> None:
        self._headers_timer = None
        transport: asyncio.Transport = self.transport  # type: ignore[attr-defined]
        if transport.is_closing() or self.cycle is not self._awaited_cycle:  # type: ignore[attr-defined]
            return
        # No answer is in progress (the timer only runs between requests), so a 408 can go out whole.
        self.report.count("headers", self.client[0] if self.client else "?")  # type: ignore[attr-defined]
        transport.write(REQUEST_TIMEOUT)
        transport.close()


def guarded(base: type[asyncio.Protocol], limits: GuardLimits, report: GuardReport) -> type[asyncio.Protocol]:
    """`base` (a uvicorn HTTP protocol class) with the guard, its limits and a connection count of its own."""
    return type(f"Guarded{base.__name__}", (GuardedProtocol, base),
                {"limits": limits, "report": report, "connections_by_peer": Counter()})


# The class uvicorn loads for "auto" once `install` has run; uvicorn imports it by this name.
protocol: type[asyncio.Protocol] | None = None


def install_into_uvicorn(limits: GuardLimits) -> type[asyncio.Protocol]:
    """Make every uvicorn server started later in this process use the guarded "auto" protocol."""
    global protocol
    from uvicorn.config import HTTP_PROTOCOLS
    from uvicorn.importer import import_from_string

    ours = f"{__name__}:protocol"
    if HTTP_PROTOCOLS["auto"] != ours:
        protocol = guarded(import_from_string(HTTP_PROTOCOLS["auto"]), limits, GuardReport())
        HTTP_PROTOCOLS["auto"] = ours
    assert protocol is not None
    return protocol


def in_flight_limit(limits: GuardLimits, report: GuardReport) -> list[Middleware]:
    """The ingress's ClientLimitMiddleware and 429 answer, counting this proxy's requests; none without a limit."""
    if limits.max_inflight_per_client == 0:
        return []
    limiter = limits.client_limiter(lambda: report.count("limited", "an address over its in-flight limit"))
    return [Middleware(ClientLimitMiddleware, limiter=limiter)]


def install() -> list[Middleware]:
    """Ray's proxy callback (RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH): guards uvicorn's protocol, returns the
    in-flight limit's middleware."""
    import ray

    actor = ray.get_runtime_context().get_actor_name() or ""
    if not actor.startswith(PROXY_ACTOR_PREFIX) or "fallback" in actor:
        log.info("proxy guard: not installed in %r (only in Ray's proxy actors)", actor)
        return []
    limits = GuardLimits.from_environment(os.environ)
    guarded_protocol = install_into_uvicorn(limits)
    log.info("proxy guard installed on %s: %s", guarded_protocol.__mro__[2].__name__, limits)
    return in_flight_limit(limits, guarded_protocol.report)
