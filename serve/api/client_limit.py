"""At most `http.max_inflight_per_client` requests in flight per client address: one client (or one slow-body
attacker that keeps opening connections) cannot take all of the ingress's ongoing-request slots."""
from __future__ import annotations

import ipaddress
from typing import Callable, Sequence

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from serve.api.responses import error_response
from serve.config import HttpOptions
from serve.errors import TooManyRequests

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def client_address(scope: Scope, trusted: Sequence[Network]) -> str | None:
    """The TCP peer, unless it is a trusted proxy: then the right-most X-Forwarded-For entry that is not one
    (entries to its left are whatever the client wrote and prove nothing)."""
    peer = (scope.get("client") or (None,))[0]
    if peer is None:
        return None
    peer_ip = _ip(peer)
    if peer_ip is None or not any(peer_ip in net for net in trusted):
        return peer
    forwarded = [part.strip() for name, value in scope.get("headers", ()) if name == b"x-forwarded-for"
                 for part in value.decode("latin-1").split(",") if part.strip()]
    for hop in reversed(forwarded):
        hop_ip = _ip(hop)
        if hop_ip is None or not any(hop_ip in net for net in trusted):
            return hop
    return forwarded[0] if forwarded else peer


class ClientLimiter:
    """Counts in-flight requests by client address; a single event loop, so no lock."""

    def __init__(self, limit: int, limit_loopback: bool, trusted: Sequence[Network],
                 on_refusal: Callable[[], None] = lambda: None) -> None:
        self.limit = limit
        self.limit_loopback = limit_loopback
        self.trusted = tuple(trusted)
        self.on_refusal = on_refusal
        self.inflight: dict[str, int] = {}

    @classmethod
    def from_options(cls, http: HttpOptions, on_refusal: Callable[[], None] = lambda: None,
                     node_ip: str | None = None) -> "ClientLimiter":
        """Behind HAProxy (`http.proxy: haproxy`) every request comes from HAProxy on this node, which connects to
        the ingress at the node's address (`node_ip`) and so from it, and names the client in X-Forwarded-For
        (cluster/haproxy_config.py): that one address is trusted too (not all of loopback: clients on it count)."""
        trusted = list(http.trusted_proxies)
        if http.proxy == "haproxy":
            trusted.append(ipaddress.ip_network(node_ip or "127.0.0.1"))
        return cls(http.max_inflight_per_client, http.limit_loopback, trusted, on_refusal)

    def key(self, scope: Scope) -> str | None:
        """The address to count this request against; None when it is not limited: loopback unless asked, and a
        trusted balancer that names no client (its requests are everyone's, as for the connection limit)."""
        if self.limit == 0:
            return None
        address = client_address(scope, self.trusted)
        if address is None:
            return None
        ip = _ip(address)
        if ip is not None and ((ip.is_loopback and not self.limit_loopback) or any(ip in net for net in self.trusted)):
            return None
        return address

    def admit(self, key: str) -> bool:
        count = self.inflight.get(key, 0)
        if count >= self.limit:
            self.on_refusal()
            return False
        self.inflight[key] = count + 1
        return True

    def release(self, key: str) -> None:
        count = self.inflight.pop(key) - 1
        if count:
            self.inflight[key] = count


def too_many_in_flight() -> Response:
    """429 with Retry-After and Connection: close (serve/api/responses.py), the same from the ingress and the proxy."""
    return error_response(TooManyRequests("too many requests in flight from this address"))


class ClientLimitMiddleware:
    """Plain ASGI, like DrainMiddleware: refuses at once (before the body is read) with `refusal()`.
    The limiter is `limiter` (Ray's proxy, serve/cluster/proxy_guard.py, owns one) or else the app's
    `state.client_limit`, set when the ingress starts; without either every request passes."""

    def __init__(self, app: ASGIApp, refusal: Callable[[], Response] = too_many_in_flight,
                 limiter: ClientLimiter | None = None) -> None:
        self.app = app
        self.refusal = refusal
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limiter = self.limiter or getattr(scope["app"].state, "client_limit", None)
        key = limiter.key(scope) if limiter is not None and scope["type"] == "http" else None
        if key is None:
            await self.app(scope, receive, send)
            return
        if not limiter.admit(key):
            await self.refusal()(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            limiter.release(key)
