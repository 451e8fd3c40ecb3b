"""What every gRPC model server of the stack shares: message limits, standard
health (NOT_SERVING until the model is loaded), reflection (so grpcurl works
with no .proto at hand), and a graceful stop on SIGTERM/SIGINT.

Services keep their own servicers; this module only assembles the server.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

log = logging.getLogger(__name__)


class ModelServer:
    """A grpc.aio server whose health follows the model's state."""

    def __init__(self, service_names: list[str], max_message_bytes: int) -> None:
        self.service_names = service_names
        self.server = grpc.aio.server(options=[
            # Images and audio exceed gRPC's 4 MiB default; the limit follows
            # MAX_UPLOAD_MB so that what the gateway accepts also fits here.
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ])
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection([*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server)

    async def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ["", *self.service_names]:
            await self.health.set(name, status)

    def bind(self, host: str, port: int) -> int:
        """Binds an insecure port (the stack's gRPC stays on a private network) and
        returns the actual port, which differs from `port` when it is 0."""
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        bound = self.server.add_insecure_port(address)
        if bound == 0:
            raise OSError(f"cannot listen on {address}")
        return bound

    async def run(self, load_model: Callable[[], Awaitable[None]], grace_seconds: float = 5.0) -> None:
        """Starts serving at once (health NOT_SERVING), loads the model, turns
        SERVING, and stops gracefully on SIGTERM or SIGINT."""
        await self.set_serving(False)
        await self.server.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loader = asyncio.create_task(self._load(load_model, stop))
        await stop.wait()
        log.info("stopping (grace %.0f s)", grace_seconds)
        loader.cancel()
        await self.set_serving(False)
        await self.server.stop(grace_seconds)

    async def _load(self, load_model: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
        try:
            await load_model()
        except asyncio.CancelledError:
            raise
        except Exception:
            # A model that cannot load makes the process useless: exit non-zero
            # so that the supervisor (compose, make run) reports it.
            log.exception("model failed to load; stopping")
            self.failed = True
            stop.set()
            return
        await self.set_serving(True)
        log.info("model loaded: SERVING")

    failed = False
