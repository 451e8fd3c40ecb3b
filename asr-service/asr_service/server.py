"""Process entry point: settings → gRPC server → model load → serve until a signal.

The server itself (health NOT_SERVING until the model is loaded, signals,
graceful stop, exit status 1 with a one-line reason when the model cannot be
loaded) is chatbot_protos.serving's; this module adds the ASR's settings, its
servicer, and how to provision and load a Whisper model. On stop, waiting jobs
of the worker pool are dropped.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from chatbot_protos.asr.v1 import asr_pb2_grpc
from chatbot_protos.serving import ModelServer, host_port, in_daemon_thread, run_service
from pydantic import ValidationError

from .config import Settings
from .engine import Engine, EngineConfig, load_engine as load_with
from .errors import ModelProvisioningError
from .language_detection import LanguageDetection
from .servicer import SERVICE_NAME, TranscriptionServicer
from .worker_pool import BoundedWorkerPool

logger = logging.getLogger("asr_service")

EXIT_BAD_CONFIG = 2  # 0 and 1 are serving's: stopped, or the model/port failed


def main(argv: Sequence[str] | None = None) -> int:
    """Run the service; returns the process exit status."""
    args = _parse_args(argv)
    try:
        settings = Settings(**{k: v for k, v in vars(args).items() if v is not None})
    except ValidationError as error:
        print(f"asr-service: invalid configuration\n{error}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    _configure_logging(settings.log_level)
    return run_service(serve(settings))


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
    try:
        servicer = TranscriptionServicer(settings, pool)
        server = ModelServer("asr-service", [SERVICE_NAME], settings.grpc_message_limit)
        asr_pb2_grpc.add_TranscriptionServicer_to_server(servicer, server.server)
        port = server.bind(settings.host, settings.port)
        # tests/asr/service.py and users read this line to learn the port when it was 0.
        logger.info("asr-service listening on %s", host_port(settings.host, port))

        async def load() -> None:
            engine = await in_daemon_thread(lambda: load_engine(settings), "asr-model-loader")
            pool.set_threads(pool_threads(settings, engine))
            servicer.attach_engine(engine)

        return await server.run(load, model=settings.model)
    finally:
        pool.shutdown()  # drops waiting jobs; the server has already stopped


def pool_threads(settings: Settings, engine: Engine) -> int:
    """Worker threads for ``engine``: one per model replica without batching.

    With batching a request's thread mostly waits for its batch, so there are
    enough threads for two full batches per replica (one decoding, the next
    being decoded and VAD-cut meanwhile); the pool caps it at ASR_WORKERS +
    ASR_MAX_QUEUE, the admission bound, which is unchanged.
    """
    batch_size = getattr(engine, "batch_size", 1)
    return settings.workers * (2 * batch_size if batch_size > 1 else 1)


def load_engine(settings: Settings) -> Engine:
    """Load the configured model with the configured engine; blocking.

    Each engine provisions its model and turns a load failure into a
    one-line ``ModelProvisioningError`` saying what to do about it.
    """
    config = EngineConfig(
        device=settings.device,
        compute_type=settings.compute_type,
        cpu_threads=settings.cpu_threads,
        workers=settings.workers,
        batch_size=settings.batch_size,
        batch_window=settings.batch_window_ms / 1000,
        encoder_window_s=settings.encoder_window_s,
        language_detection=LanguageDetection(settings.language_detection_segments,
                                             settings.language_detection_threshold),
    )
    engine = load_with(settings.engine, settings.model, settings.models_dir, config)
    if settings.language and settings.language not in engine.languages:
        raise ModelProvisioningError(
            f"ASR_LANGUAGE={settings.language!r} is not a language model {settings.model!r} knows"
        )
    return engine
