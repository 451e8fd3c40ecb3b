"""Asks a gRPC server for its standard health status."""

from __future__ import annotations

import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def health_status(address: str, service: str = "") -> str:
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=3)
        except grpc.RpcError as error:
            return f"UNREACHABLE ({error.code().name})"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def wait_until_serving(address: str, timeout: float, is_alive=lambda: True) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if health_status(address) == "SERVING":
            return
        if not is_alive():
            raise RuntimeError(f"the service at {address} exited before it was SERVING")
        time.sleep(0.3)
    raise TimeoutError(f"{address} was not SERVING within {timeout:.0f} s")
