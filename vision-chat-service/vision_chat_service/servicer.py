"""gRPC ChatService: converts protobuf to domain types, asks the backend, converts back."""

from __future__ import annotations

import logging

import grpc
from chatbot_protos.chat.v1 import chat_pb2, chat_pb2_grpc

from .backends import ChatBackend
from .domain import ChatFinal, delta_to_pb, final_to_pb, request_from_pb, with_system_prompt
from .errors import ChatError, status_for

log = logging.getLogger(__name__)


class ChatServicer(chat_pb2_grpc.ChatServiceServicer):
    def __init__(self, backend: ChatBackend, system_prompt: str = "") -> None:
        self._backend = backend
        self._system_prompt = system_prompt

    async def Chat(self, request: chat_pb2.ChatRequest, context: grpc.aio.ServicerContext):
        model = request.model or self._backend.models()[0].name
        chat_request = None
        try:
            chat_request = with_system_prompt(request_from_pb(request), self._system_prompt)
            async for event in self._backend.stream(chat_request):
                if isinstance(event, ChatFinal):
                    yield final_to_pb(event, model)
                else:
                    yield delta_to_pb(event, model)
            return
        except Exception as error:
            code, message = _refusal(error)
        # abort() raises out of this frame, and grpc.aio keeps that exception, whose traceback keeps the
        # frame and its locals, in a reference cycle until the garbage collector runs. Dropping the request
        # first frees a refused 20 MB prompt at once: 20 in a row grew the service by up to +710 MB before
        # (freed at the 19th), +50 MB at most after (+146 MB without the launcher's MALLOC_TRIM_THRESHOLD_).
        del request, chat_request
        await context.abort(code, message)

    async def ListModels(self, request: chat_pb2.ListModelsRequest, context: grpc.aio.ServicerContext):
        return chat_pb2.ListModelsResponse(models=[
            chat_pb2.ModelInfo(name=m.name, backend=m.backend, vision=m.vision,
                               max_images_per_message=m.max_images_per_message,
                               base_model=m.base_model, context_length=m.context_length)
            for m in self._backend.models()
        ])


def _refusal(error: Exception) -> tuple[grpc.StatusCode, str]:
    """The status for a failed call, logged (with the traceback when it is not the caller's mistake)."""
    code, message = status_for(error)
    if isinstance(error, ChatError):
        log.info("chat refused (%s): %s", code.name, message)
    else:
        log.error("chat failed", exc_info=error)
    return code, message
