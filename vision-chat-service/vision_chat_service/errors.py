"""Domain errors of the chat service and the one table that maps them to gRPC codes."""

from __future__ import annotations

import grpc


class ChatError(Exception):
    """Base class: an error whose message is safe and useful to show the caller."""

    code = grpc.StatusCode.INTERNAL


class InvalidRequest(ChatError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class ModelNotFound(ChatError):
    code = grpc.StatusCode.NOT_FOUND


class QueueFull(ChatError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class BackendUnavailable(ChatError):
    """The backend is down, still loading, or failed in a way the caller can retry."""

    code = grpc.StatusCode.UNAVAILABLE


def status_for(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC status and message to send for an exception raised while serving."""
    if isinstance(error, ChatError):
        return error.code, str(error)
    # Anything else is a bug: the details stay in the log, not in the reply.
    return grpc.StatusCode.INTERNAL, "internal error in the chat service; see its log"
