"""Chat: the seed's `POST /api/chat` (one JSON answer) and its streaming form
`POST /api/chat/stream` (Server-Sent Events: meta, delta…, done | error)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import grpc
from chatbot_protos.chat.v1 import chat_pb2
from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import StreamingResponse

from ..chat_calls import collect_answer, first_reply, with_heartbeats
from ..clients import ClientsDep, SettingsDep, request_metadata
from ..errors import bad_request, from_grpc
from ..uploads import is_present, read_upload

router = APIRouter(tags=["chat"])

_FINISH_NAMES = {chat_pb2.FINISH_REASON_STOP: "stop", chat_pb2.FINISH_REASON_LENGTH: "length"}


async def build_request(message: str | None, image: UploadFile | None) -> chat_pb2.ChatRequest:
    if message is None or not message.strip():
        raise bad_request("message is required")
    user = chat_pb2.Message(role=chat_pb2.ROLE_USER, text=message)
    if is_present(image):
        data, mime = await read_upload(image, "image", "image")
        user.images.add(data=data, mime_type=mime)
    return chat_pb2.ChatRequest(messages=[user])


def usage_of(final: chat_pb2.ChatFinal) -> dict:
    return {"prompt_tokens": final.prompt_tokens, "completion_tokens": final.completion_tokens,
            "total_tokens": final.prompt_tokens + final.completion_tokens}


def timings_of(final: chat_pb2.ChatFinal) -> dict:
    return {"time_to_first_token_s": round(final.time_to_first_token_seconds, 3),
            "total_s": round(final.total_seconds, 3), "tokens_per_second": round(final.tokens_per_second, 2)}


@router.post("/api/chat")
async def chat(request: Request, clients: ClientsDep, settings: SettingsDep,
               message: str | None = Form(None), image: UploadFile | None = File(None)) -> dict:
    """Answers in one JSON document once the model has finished (the seed's contract)."""
    chat_request = await build_request(message, image)
    call = clients.chat.Chat(chat_request, timeout=settings.chat_timeout_s, metadata=request_metadata(request))
    try:
        answer = await collect_answer(call)
    except grpc.aio.AioRpcError as error:
        raise from_grpc(error, "chat") from None
    return {"model": answer.model, "message": {"role": "assistant", "content": answer.text}, "done": True,
            "done_reason": _FINISH_NAMES.get(answer.final.finish_reason, "stop"),
            "usage": usage_of(answer.final), "timings": timings_of(answer.final)}


def sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


@router.post("/api/chat/stream")
async def chat_stream(request: Request, clients: ClientsDep, settings: SettingsDep,
                      message: str | None = Form(None), image: UploadFile | None = File(None)):
    """Streams the answer as Server-Sent Events while the model generates it."""
    chat_request = await build_request(message, image)
    call = clients.chat.Chat(chat_request, timeout=settings.chat_timeout_s, metadata=request_metadata(request))
    try:
        first = await first_reply(call)
    except grpc.aio.AioRpcError as error:
        raise from_grpc(error, "chat") from None
    events = _events(call, first, settings.sse_heartbeat_s)
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _events(call, first: chat_pb2.ChatResponse, heartbeat_s: float) -> AsyncIterator[str]:
    """SSE lines from the gRPC stream. Leaving early (the client went away)
    cancels the gRPC call, which stops the model."""
    try:
        yield sse("meta", {"model": first.model})
        async for reply in with_heartbeats(call, first, heartbeat_s):
            if reply is None:
                yield ": heartbeat\n\n"
                continue
            if reply.delta:
                yield sse("delta", {"content": reply.delta})
            if reply.HasField("final"):
                yield sse("done", {"done_reason": _FINISH_NAMES.get(reply.final.finish_reason, "stop"),
                                   "usage": usage_of(reply.final), "timings": timings_of(reply.final)})
    except grpc.aio.AioRpcError as error:
        failure = from_grpc(error, "chat")
        yield sse("error", failure.body())
    finally:
        call.cancel()
