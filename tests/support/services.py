"""Starts one service as its own process (from its own virtualenv) for tests
that need a configuration the shared stack does not have."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path

import grpc
import httpx
from chatbot_protos.asr.v1 import asr_pb2_grpc

from scripts.stack import REPO, Service, StackConfig, free_port
from tests.support.grpc_health import wait_until_serving

PORT_VARS = {"chat": "CHAT_PORT", "asr": "ASR_PORT"}

_MODULES = {"chat": "vision_chat_service", "asr": "asr_service", "gateway": "gateway"}


def start_service(kind: str, log_dir: Path, env: dict[str, str]) -> Service:
    service = Service(kind, [str(REPO / ".venv" / kind / "bin" / "python"), "-m", _MODULES[kind]],
                      log_dir / f"{kind}-{len(list(log_dir.glob('*.log')))}.log")
    # Same MODELS_DIR and limits as the stack; a gateway gets its own data folder
    # and single-user mode (it listens on loopback) unless `env` says otherwise.
    defaults = StackConfig(data_dir=log_dir / "data", auth="off").service_env()
    service.start({**os.environ, **defaults, "PYTHONUNBUFFERED": "1", **env})
    return service


@contextmanager
def grpc_service(kind: str, log_dir: Path, env: dict[str, str], timeout: float = 300):
    """A SERVING gRPC service on a free port; yields (service, "host:port")."""
    port = free_port()
    port_var = PORT_VARS[kind]
    service = start_service(kind, log_dir, {**env, port_var: str(port)})
    address = f"127.0.0.1:{port}"
    try:
        wait_until_serving(address, timeout, service.running)
        yield service, address
    except BaseException:
        print(service.log_tail())
        raise
    finally:
        service.stop()


@contextmanager
def gateway_service(log_dir: Path, env: dict[str, str], timeout: float = 60):
    """A gateway on a free port, answering /healthz; yields (service, base URL)."""
    port = free_port()
    service = start_service("gateway", log_dir, {**env, "GATEWAY_PORT": str(port)})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                httpx.get(f"{url}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert service.running() and time.monotonic() < deadline, service.log_tail()
                time.sleep(0.2)
        yield service, url
    finally:
        service.stop()


@contextmanager
def service_on(kind: str, port: int, log_dir: Path, env: dict[str, str] | None = None):
    """A SERVING service on a fixed port, so a replacement can take its place (the fault tests)."""
    service = start_service(kind, log_dir, {**(env or {}), PORT_VARS[kind]: str(port)})
    try:
        wait_until_serving(f"127.0.0.1:{port}", 300, service.running)
        yield service
    finally:
        service.stop()


@contextmanager
def asr_stub(log_dir: Path, env: dict[str, str], timeout: float = 300):
    """An ASR service of its own, SERVING; yields (service, its TranscriptionStub)."""
    with grpc_service("asr", log_dir, env, timeout) as (service, address), grpc.insecure_channel(address) as channel:
        yield service, asr_pb2_grpc.TranscriptionStub(channel)
