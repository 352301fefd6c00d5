"""A replica's inter-deployment gRPC server binds where REPLICA_GRPC_HOST_ENV says, on a real gRPC server."""
from __future__ import annotations

import ipaddress
from concurrent.futures import ThreadPoolExecutor

import grpc
import psutil
import pytest
from ray.serve._private import replica

from serve.runtime.replica_grpc import ALL_INTERFACES, REPLICA_GRPC_HOST_ENV, bind_replica_grpc_to_configured_host


def listening_addresses(port: int) -> set[str]:
    return {c.laddr.ip for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.laddr.port == port}


def loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return (getattr(ip, "ipv4_mapped", None) or ip).is_loopback


@pytest.fixture
def restore_ray():
    original = replica.add_port_to_grpc_server
    yield
    replica.add_port_to_grpc_server = original


def test_ray_still_binds_every_interface_by_this_name() -> None:
    """If Ray renames the call or changes the address, the override silently stops working: fail here."""
    import inspect

    assert f'add_port_to_grpc_server(self._server, "{ALL_INTERFACES}")' in inspect.getsource(replica.Replica)


def test_without_the_variable_ray_binds_every_interface(monkeypatch, restore_ray) -> None:
    monkeypatch.delenv(REPLICA_GRPC_HOST_ENV, raising=False)
    bind_replica_grpc_to_configured_host()
    server = grpc.server(ThreadPoolExecutor(1))
    port = replica.add_port_to_grpc_server(server, ALL_INTERFACES)
    server.start()
    try:
        assert not all(map(loopback, listening_addresses(port)))
    finally:
        server.stop(None)


def test_with_the_variable_the_replica_binds_loopback_only(monkeypatch, restore_ray) -> None:
    monkeypatch.setenv(REPLICA_GRPC_HOST_ENV, "127.0.0.1")
    bind_replica_grpc_to_configured_host()
    bound = replica.add_port_to_grpc_server
    bind_replica_grpc_to_configured_host()  # a second deployment in the same process: not wrapped twice
    assert replica.add_port_to_grpc_server is bound
    server = grpc.server(ThreadPoolExecutor(1))
    port = replica.add_port_to_grpc_server(server, ALL_INTERFACES)
    server.start()
    try:
        addresses = listening_addresses(port)
        assert addresses and all(map(loopback, addresses)), addresses
    finally:
        server.stop(None)
