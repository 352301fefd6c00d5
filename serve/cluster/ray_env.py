"""Flags for Ray's own processes. Ray Serve reads them when its controller, proxies and replicas start,
so they must be in the environment Ray starts with: set by `python -m serve` before it starts a local
Ray, and in the pod spec on a cluster (deploy/)."""
from __future__ import annotations

import ipaddress
import random
import socket
from pathlib import Path

from serve.config import HttpOptions
from serve.cluster.proxy_guard import GuardLimits
from serve.runtime.replica_grpc import REPLICA_GRPC_HOST_ENV

HAPROXY = {
    # Ray Serve's high-throughput mode (Ray >= 2.55): HAProxy on every node in place of the Python proxy,
    # ingress replicas serving HTTP directly, gRPC between replicas, user code on the replica's own loop.
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
}
RAY_PROXY = {"RAY_SERVE_ENABLE_HA_PROXY": "0", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "0"}
# Ray's own periodic work on a local server, which shares its cores with the requests: the Serve controller's loop
# (every 0.1 s by default), Serve's metrics export (every 0.1 s) and Ray's metrics collection (for Ray's
# dashboard and Prometheus endpoint, which a local server does not start; our metrics go through the MetricsHub).
# What they save: docs/ARCHITECTURE.md, "Decisions".
QUIET_LOCAL_RAY = {"RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5", "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": "2000",
                   "RAY_enable_metrics_collection": "0"}


def serve_environment(proxy: str) -> dict[str, str]:
    """The flags for `http.proxy`; they replace whatever the caller's environment says."""
    return dict(HAPROXY if proxy == "haproxy" else RAY_PROXY)


def front_door_environment(http: HttpOptions) -> dict[str, str]:
    """serve_environment plus the slow-client limits only the front door's environment can set. Ray's proxy: the
    hook that installs the header deadline and per-address connection limit (cluster/proxy_guard.py). HAProxy:
    how long a client may stay silent (headers included; Ray's default is an hour) and how many connections it
    holds."""
    env = serve_environment(http.proxy)
    if http.proxy == "ray":
        env.update(GuardLimits.from_options(http).environment())
    else:
        env.update(RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S=str(http.client_idle_timeout_s),
                   RAY_SERVE_HAPROXY_MAXCONN=str(http.max_connections))
    return env


# Below the kernel's ephemeral range (32768+), which hands released ports straight back out to Ray's own
# connections, and clear of Ray's worker ports (10002-19999) and direct-ingress ports (30000-31000).
SPARE_PORTS = range(21000, 30000)


def spare_ports(count: int, avoid: tuple[int, ...] = ()) -> list[int]:
    """`count` ports nothing listens on now, from SPARE_PORTS."""
    found = []
    for port in random.sample(SPARE_PORTS, len(SPARE_PORTS)):
        if port in avoid:
            continue
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == count:
            return found
    raise RuntimeError(f"no free ports in {SPARE_PORTS}")


def local_haproxy_ports(http_port: int) -> dict[str, str]:
    """HAProxy's stats page and Prometheus exporter listen on fixed ports by default (8404, 9101), and so does
    the head node's fallback proxy that Ray keeps beside HAProxy (127.0.0.1:8500 for HTTP, 9500 for gRPC): a
    second server on one host would collide on them, so a local server takes spare ones instead."""
    stats, metrics, fallback_http, fallback_grpc = spare_ports(4, avoid=(http_port,))
    return {"RAY_SERVE_HAPROXY_STATS_PORT": str(stats), "RAY_SERVE_HAPROXY_METRICS_PORT": str(metrics),
            "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(fallback_http),
            "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(fallback_grpc)}


def local_haproxy_files(directory: Path) -> dict[str, str]:
    """Ray keeps HAProxy's config, sockets and server state in /tmp/haproxy-serve/<node id>/ and never
    removes them, one directory per start: a local server keeps them in `directory`, which it owns and
    removes when it stops. Ray appends the node id to each path's directory."""
    return {
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(directory / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(directory / "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(directory),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(directory / "server-state"),
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(directory / "metrics.sock"),
    }


def local_ray_environment(host: str) -> dict[str, str]:
    """A local server on a loopback `host` keeps Ray's own ports on loopback too. Ray 2.60 binds its gRPC servers
    (GCS, raylets, object manager, every worker), the dashboard agent and the runtime-env agent to the node's IP,
    which `ray.init` resolves from the default route even when given 127.0.0.1 (services.resolve_ip_for_localhost)
    except where ENABLE_RAY_CLUSTER is off, as on macOS and Windows: then the node IP is 127.0.0.1. Each Serve
    replica's inter-deployment gRPC server, which Ray binds on every interface, follows REPLICA_GRPC_HOST_ENV
    (serve/runtime/replica_grpc.py)."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    return {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", REPLICA_GRPC_HOST_ENV: "127.0.0.1"} if loopback else {}
