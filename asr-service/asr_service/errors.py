"""Domain errors of the ASR service and the one table that maps them to gRPC.

Why one table: every RPC must answer the same status for the same problem
(DESIGN.md §2, "one table per boundary"), and the gateway turns those codes
into HTTP statuses. Modules below the servicer raise these exceptions and know
nothing about gRPC; only the handler wrapper at the bottom talks to the
``ServicerContext``. Shape after MLServer's ``errors.py`` + ``grpc/utils.py``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

logger = logging.getLogger(__name__)

# Trailing-metadata key carrying the domain error's name (e.g. "audio_too_large"),
# so a client can tell apart problems that share one gRPC code (the gateway
# answers 413 for audio_too_large but 400 for invalid_audio).
ERROR_TYPE_METADATA_KEY = "error-type"

INTERNAL_ERROR_MESSAGE = "internal error in asr-service; see its log for details"


class AsrError(Exception):
    """Base of every expected failure; its message is safe to show to a client."""

    error_type = "asr_error"


class InvalidAudio(AsrError):
    """The bytes are empty, not audio, corrupt or hold no decodable samples."""

    error_type = "invalid_audio"


class AudioTooLong(AsrError):
    """The decoded audio is longer than ASR_MAX_AUDIO_SECONDS."""

    error_type = "audio_too_long"


class AudioTooLarge(AsrError):
    """The encoded upload is larger than MAX_UPLOAD_MB (checked before any work)."""

    error_type = "audio_too_large"


class InvalidOptions(AsrError):
    """A transcription option is out of range (unknown language, huge beam…)."""

    error_type = "invalid_options"


class InvalidRequest(AsrError):
    """The call breaks the protocol (StreamingTranscribe: audio before the config…)."""

    error_type = "invalid_request"


class ChunkTooLarge(AsrError):
    """A StreamingTranscribe audio chunk is over the 16 KiB a message may carry."""

    error_type = "chunk_too_large"


class QueueFull(AsrError):
    """Every worker is busy and the waiting line is full: the client should retry."""

    error_type = "queue_full"


class ModelNotReady(AsrError):
    """The model is still being provisioned or loaded."""

    error_type = "model_not_ready"


class ModelProvisioningError(AsrError):
    """The configured model could not be prepared (bad checksum, missing files…).

    Raised at start-up only, so it has no gRPC code: the server exits instead.
    """

    error_type = "model_provisioning_error"


# The table. Lookup walks the exception's MRO, so a subclass inherits its
# parent's code unless it has a row of its own.
GRPC_STATUS: dict[type[AsrError], grpc.StatusCode] = {
    InvalidAudio: grpc.StatusCode.INVALID_ARGUMENT,
    AudioTooLong: grpc.StatusCode.INVALID_ARGUMENT,
    AudioTooLarge: grpc.StatusCode.INVALID_ARGUMENT,
    InvalidOptions: grpc.StatusCode.INVALID_ARGUMENT,
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    ChunkTooLarge: grpc.StatusCode.INVALID_ARGUMENT,
    QueueFull: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ModelNotReady: grpc.StatusCode.UNAVAILABLE,
}


def grpc_status(error: AsrError) -> grpc.StatusCode:
    """The gRPC code for a domain error (INTERNAL for one missing from the table)."""
    for cls in type(error).__mro__:
        if cls in GRPC_STATUS:
            return GRPC_STATUS[cls]
    return grpc.StatusCode.INTERNAL


Handler = TypeVar("Handler", bound=Callable[..., Awaitable])


def unary_errors(handler: Handler) -> Handler:
    """Wrap an async unary-unary handler so failures become proper gRPC statuses.

    Domain errors keep their message (it was written for the client); anything
    else is a bug: it is logged with its traceback and the client gets a
    generic INTERNAL, so internals (paths, library messages) never leak.
    """

    @functools.wraps(handler)
    async def wrapper(self, request, context: grpc.aio.ServicerContext):
        try:
            return await handler(self, request, context)
        except grpc.aio.AbortError:
            raise  # the handler already chose a status itself
        except Exception as error:  # noqa: BLE001 - the last line of defence
            status = _failure_status(handler.__name__, error)
        # abort() raises out of this frame and grpc.aio keeps that exception (its traceback, this frame
        # and its locals) in a reference cycle until the garbage collector runs: drop the request (up
        # to MAX_UPLOAD_MB of audio) first, so that a refused upload is freed at once.
        del request
        await _abort(context, *status)

    return wrapper  # type: ignore[return-value]


def stream_errors(handler):
    """``unary_errors`` for an async-generator (server-streaming) handler.

    A stream that fails after it started still ends with a status naming the
    problem (DESIGN.md §2: never silently). Cancellation (client gone) is a
    ``CancelledError``, a BaseException: it passes through untouched.
    """

    @functools.wraps(handler)
    async def wrapper(self, request_iterator, context: grpc.aio.ServicerContext):
        try:
            async for response in handler(self, request_iterator, context):
                yield response
            return
        except grpc.aio.AbortError:
            raise
        except Exception as error:  # noqa: BLE001 - the last line of defence
            status = _failure_status(handler.__name__, error)
        del request_iterator  # as in unary_errors: nothing of the call kept past abort()
        await _abort(context, *status)

    return wrapper


def _failure_status(name: str, error: Exception) -> tuple[grpc.StatusCode, str, str]:
    """(code, message, error type) for a failed call, logged. Domain errors keep their message (it was
    written for the client); anything else is a bug, logged with its traceback, and the client gets a
    generic INTERNAL, so internals (paths, library messages) never leak."""
    if isinstance(error, AsrError):
        logger.info("%s refused: %s (%s)", name, error, error.error_type)
        return grpc_status(error), str(error), error.error_type
    logger.error("unexpected error in %s", name, exc_info=error)
    return grpc.StatusCode.INTERNAL, INTERNAL_ERROR_MESSAGE, "internal"


async def _abort(
    context: grpc.aio.ServicerContext,
    code: grpc.StatusCode,
    message: str,
    error_type: str,
) -> None:
    """End the call with ``code`` and ``message``, tagging the domain error type."""
    await context.abort(
        code, message, trailing_metadata=((ERROR_TYPE_METADATA_KEY, error_type),)
    )
