"""What every gRPC model server of the stack shares, so each service keeps only
its settings, servicers and model loading.

Life of a process, and why:
1. bind and start serving at once, with health NOT_SERVING, so orchestrators
   and the gateway can tell "starting" from "down" (``/readyz`` says which);
2. load the model concurrently: health keeps answering while it runs;
3. turn health SERVING;
4. on SIGTERM/SIGINT, health goes NOT_SERVING, new calls are refused and calls
   in flight get a grace period; a second signal exits at once.

A model that cannot load makes the process useless, so it EXITS with status 1
and a one-line reason rather than lingering NOT_SERVING forever: a crash is
what ``docker compose`` (restart policy, ``depends_on: service_healthy``) and
the native launcher notice and report.

Typical use, in a service's ``serve()``::

    server = ModelServer("asr-service", [SERVICE_NAME], max_message_bytes)
    add_MyServicer_to_server(servicer, server.server)
    port = server.bind(host, port)
    log.info("asr-service listening on %s", host_port(host, port))
    return await server.run(load_model, model=name)

and ``main()`` returns ``run_service(serve(settings))``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILURE = 0, 1

# Below compose's stop_grace_period (30 s) and the launcher's stop timeout, so
# calls in flight (a long answer on a slow CPU) finish before anyone resorts to
# SIGKILL. The gateway gives its streams the same (gateway/server.py).
DEFAULT_GRACE_S = 25.0

T = TypeVar("T")


class CannotListen(OSError):
    """The address is taken, or is not one of this machine's."""


def host_port(host: str, port: int) -> str:
    """``host:port``, with IPv6 literals in brackets as gRPC and URLs need."""
    bracketed = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"{bracketed}:{port}"


def run_service(serve: Coroutine[Any, Any, int]) -> int:
    """``asyncio.run`` for a service's ``serve()``: returns its exit status, and
    turns a port that cannot be bound into status 1 with one log line."""
    try:
        return asyncio.run(serve)
    except CannotListen as error:
        log.error("%s", error)
        return EXIT_FAILURE


def in_daemon_thread(fn: Callable[[], T], name: str = "model-loader") -> asyncio.Future[T]:
    """Run a blocking ``fn`` in a daemon thread and await its result.

    Why not ``asyncio.to_thread``: executor threads are joined at exit, so a
    SIGTERM during a long model download would hang until it finished. A
    daemon thread simply dies with the process.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(setter: Callable[[Any], None], value: Any) -> None:
        if not future.done():  # cancelled by a stop while fn was running
            setter(value)

    def target() -> None:
        try:
            result = fn()
        except BaseException as error:  # noqa: BLE001 - handed to the awaiting task
            setter, value = future.set_exception, error
        else:
            setter, value = future.set_result, result
        try:
            loop.call_soon_threadsafe(settle, setter, value)
        except RuntimeError:
            pass  # the loop is already closed: nobody is waiting any more

    threading.Thread(target=target, name=name, daemon=True).start()
    return future


class ModelServer:
    """A grpc.aio server with health and reflection, whose health follows the
    model's state. Register servicers on ``.server`` before ``bind``/``run``."""

    def __init__(self, name: str, service_names: Sequence[str], max_message_bytes: int) -> None:
        self.name = name  # the process's name in log lines, e.g. "asr-service"
        self.service_names = list(service_names)
        self.server = grpc.aio.server(options=[
            # Images and audio exceed gRPC's 4 MiB default; the limit follows
            # MAX_UPLOAD_MB so that what the gateway accepts also fits here.
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            # gRPC sets SO_REUSEPORT by default on Linux: a second service on a
            # taken port would bind and silently share its calls with the first.
            ("grpc.so_reuseport", 0),
        ])
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        # Reflection lets grpcurl call the services with no .proto at hand.
        reflection.enable_server_reflection(
            [*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server)

    def bind(self, host: str, port: int) -> int:
        """Binds an insecure port (the stack's gRPC stays on a private network) and
        returns the actual port, which differs from ``port`` when it is 0."""
        address = host_port(host, port)
        try:
            bound = self.server.add_insecure_port(address)
        except RuntimeError as error:  # grpc.aio raises where the sync server returns 0
            raise CannotListen(f"{self.name} cannot listen on {address} (port taken, or not an address "
                               f"of this machine): {error}") from error
        if bound == 0:
            raise CannotListen(f"{self.name} cannot listen on {address}")
        return bound

    async def run(self, load_model: Callable[[], Awaitable[None]], *, model: str,
                  grace_seconds: float = DEFAULT_GRACE_S) -> int:
        """Serves while ``load_model`` runs, turns SERVING once it returns, and
        stops on SIGTERM/SIGINT (→ EXIT_OK) or when it raises (→ EXIT_FAILURE).

        ``load_model`` must not block the loop: wrap blocking work in
        ``in_daemon_thread``. ``model`` names the model in log lines.
        """
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.start()
        stop = self._stop_event_on_signals()
        loader = asyncio.create_task(self._load(load_model, model))
        stopped = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({loader, stopped}, return_when=asyncio.FIRST_COMPLETED)
            exit_code = EXIT_FAILURE if loader.done() and not loader.result() else EXIT_OK
            if exit_code == EXIT_OK:
                await stopped
        finally:
            log.info("%s stopping (grace %.0f s)", self.name, grace_seconds)
            # Before cancelling the loader, so that it cannot turn SERVING now.
            await self.health.enter_graceful_shutdown()
            for task in (loader, stopped):
                task.cancel()
            await asyncio.gather(loader, stopped, return_exceptions=True)
            await self.server.stop(grace_seconds)
        return exit_code

    async def _load(self, load_model: Callable[[], Awaitable[None]], model: str) -> bool:
        """Loads the model, then reports SERVING. False when it failed."""
        try:
            await load_model()
        except Exception as error:  # noqa: BLE001 - any load failure ends the process
            log.debug("model load traceback", exc_info=error)
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            log.error("cannot load model %r: %s -- %s exits with status %d",
                      model, reason, self.name, EXIT_FAILURE)
            return False
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        log.info("%s ready (model %s)", self.name, model)
        return True

    async def _set_health(self, status: int) -> None:
        for name in ["", *self.service_names]:
            await self.health.set(name, status)

    def _stop_event_on_signals(self) -> asyncio.Event:
        """An event set by SIGTERM/SIGINT; a second signal exits at once, for
        whoever will not wait for the grace period."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def on_signal(signum: int) -> None:
            if stop.is_set():
                log.warning("second %s: %s exits now", signal.Signals(signum).name, self.name)
                os._exit(128 + signum)
            log.info("%s received: shutting down gracefully", signal.Signals(signum).name)
            stop.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        return stop
