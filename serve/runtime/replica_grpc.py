"""Where a Serve replica's inter-deployment gRPC server listens.

Ray 2.60 binds it on every interface (`add_port_to_grpc_server(self._server, "[::]:0")` in
ray/serve/_private/replica.py, `Replica._on_initialized`), with no setting. A local server on a loopback
address has no other node that must reach it, so `python -m serve` names a host in REPLICA_GRPC_HOST_ENV
(serve/cluster/ray_env.local_ray_environment) and each of our deployments, when its replica is constructed
(before Ray calls `_on_initialized`), makes that call bind there instead. tests/test_replica_grpc.py fails if
Ray stops calling the function by that name.
"""
from __future__ import annotations

import os
from typing import Any, Callable

REPLICA_GRPC_HOST_ENV = "RESFAM_REPLICA_GRPC_HOST"
ALL_INTERFACES = "[::]:0"


def host_bound(add_port: Callable[[Any, str], int], host: str) -> Callable[[Any, str], int]:
    """`add_port` with Ray's every-interface address replaced by `host`, any other address untouched."""
    def add_port_on_host(server: Any, address: str) -> int:
        return add_port(server, f"{host}:0" if address == ALL_INTERFACES else address)
    add_port_on_host.bound_host = host  # type: ignore[attr-defined]
    return add_port_on_host


def bind_replica_grpc_to_configured_host() -> None:
    """Called from each deployment's __init__; does nothing unless REPLICA_GRPC_HOST_ENV is set."""
    host = os.environ.get(REPLICA_GRPC_HOST_ENV)
    if not host:
        return
    from ray.serve._private import replica

    if getattr(replica.add_port_to_grpc_server, "bound_host", None) != host:
        replica.add_port_to_grpc_server = host_bound(replica.add_port_to_grpc_server, host)
