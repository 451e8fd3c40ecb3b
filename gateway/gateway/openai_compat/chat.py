"""`POST /v1/chat/completions`: OpenAI's chat API over the chat service's gRPC `Chat`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import grpc
from chatbot_protos.chat.v1 import chat_pb2
from fastapi import APIRouter, Depends, Request

from ..auth import current_principal
from ..chat_calls import collect_answer, first_reply, with_heartbeats
from ..clients import ClientsDep, SettingsDep, request_metadata
from ..quotas import ChargedPrincipalDep, QuotasDep
from ..streams import SSE_HEADERS, SSE_OPENAPI, ClosingStreamingResponse
from .convert import ChunkWriter, completion, completion_id, now, to_chat_request
from .errors import OpenAIRoute, from_chat_grpc, sse_error
from .schemas import ChatCompletionRequest

router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute,
                   dependencies=[Depends(current_principal)])


@router.post("/chat/completions", responses=SSE_OPENAPI)
async def create_chat_completion(body: ChatCompletionRequest, request: Request, clients: ClientsDep,
                                 settings: SettingsDep, principal: ChargedPrincipalDep, quotas: QuotasDep):
    """Text and images (`image_url` parts with data: URLs); `stream` gives Server-Sent Events."""
    chat_request = to_chat_request(body)
    if body.stream:
        release_slot = quotas.open_stream(principal.user_id)
        call = clients.chat.Chat(chat_request, timeout=settings.chat_timeout_s, metadata=request_metadata(request))
        try:
            first = await first_reply(call)
        except BaseException as error:  # refused, failed, or the client left: nothing streams
            call.cancel()
            release_slot()
            if isinstance(error, grpc.aio.AioRpcError):
                raise from_chat_grpc(error) from None
            raise
        return _stream(call, first, body, settings.sse_heartbeat_s, release_slot)
    call = clients.chat.Chat(chat_request, timeout=settings.chat_timeout_s, metadata=request_metadata(request))
    try:
        answer = await collect_answer(call, default_model=body.model)
    except grpc.aio.AioRpcError as error:
        raise from_chat_grpc(error) from None
    return completion(completion_id(), now(), answer.model, answer.text, answer.final)


def _stream(call, first: chat_pb2.ChatResponse, body: ChatCompletionRequest, heartbeat_s: float,
            release_slot) -> ClosingStreamingResponse:
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    writer = ChunkWriter(first.model or body.model, include_usage)

    async def close() -> None:
        call.cancel()  # the client leaving stops the model
        release_slot()

    return ClosingStreamingResponse(_chunks(call, first, writer, heartbeat_s), on_close=close,
                                    media_type="text/event-stream", headers=SSE_HEADERS)


def _data(chunk: dict) -> str:
    return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"


async def _chunks(call, first: chat_pb2.ChatResponse, writer: ChunkWriter, heartbeat_s: float) -> AsyncIterator[str]:
    """`data: {chunk}` lines, then `data: [DONE]`."""
    try:
        yield _data(writer.role())
        async for reply in with_heartbeats(call, first, heartbeat_s):
            if reply is None:
                yield ": keep-alive\n\n"
                continue
            if reply.delta:
                yield _data(writer.content(reply.delta))
            if reply.HasField("final"):
                yield _data(writer.finish(reply.final))
                if writer.include_usage:
                    yield _data(writer.usage(reply.final))
    except grpc.aio.AioRpcError as error:
        yield sse_error(from_chat_grpc(error))
    yield "data: [DONE]\n\n"
