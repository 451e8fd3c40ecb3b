"""Chat: the seed's `POST /api/chat` (one JSON answer) and its streaming form
`POST /api/chat/stream` (Server-Sent Events: meta, delta…, done | error).

Both take the seed's multipart `message` and optional `image`, and optionally
`conversation_id` (the stored history goes to the model and both turns are
stored: conversations/turns.py) and `model` (a model or adapter name).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import grpc
from chatbot_protos.chat.v1 import chat_pb2
from fastapi import APIRouter, File, Form, Request, UploadFile

from ..chat_calls import collect_answer, first_reply, with_heartbeats
from ..clients import ClientsDep, SettingsDep, request_metadata
from ..conversations.turns import FINISH_NAMES, Turn, open_turn
from ..errors import bad_request, from_grpc
from ..forms import Utf8FormRoute
from ..quotas import ChargedPrincipalDep, QuotasDep
from ..streams import SSE_HEADERS, SSE_OPENAPI, ClosingStreamingResponse, StreamOutcome
from ..uploads import is_present, read_upload

router = APIRouter(tags=["chat"], route_class=Utf8FormRoute)  # form fields must be UTF-8


MessageForm = Form(None, description="the user's message (required)")
ImageForm = File(None, description="an image to ask about (jpeg, png, webp, gif, bmp)")
ConversationForm = Form(None, description="store both turns in this conversation and send its history")
ModelForm = Form(None, description="a model or adapter name (GET /v1/models); absent: the conversation's "
                                   "model or the service default")


async def user_message(message: str | None, image: UploadFile | None) -> chat_pb2.Message:
    if message is None or not message.strip():
        raise bad_request("message is required")
    user = chat_pb2.Message(role=chat_pb2.ROLE_USER, text=message)
    if is_present(image):
        data, mime = await read_upload(image, "image", "image")
        user.images.add(data=data, mime_type=mime)
    return user


async def prepare(request: Request, user_id: int, message: str | None, image: UploadFile | None,
                  conversation_id: str | None, model: str | None) -> tuple[chat_pb2.ChatRequest, Turn | None]:
    """The gRPC request, with the conversation's history when one is named, and the Turn that stores it."""
    new_message = await user_message(message, image)
    turn = None
    if conversation_id:
        state, settings = request.app.state, request.app.state.settings
        chat_request, turn = await open_turn(state.database, state.images, user_id, conversation_id, new_message,
                                             settings.history_max_messages)
    else:
        chat_request = chat_pb2.ChatRequest(messages=[new_message])
    if model and model.strip():
        chat_request.model = model.strip()
        if turn:
            turn.model = chat_request.model
    return chat_request, turn


def usage_of(final: chat_pb2.ChatFinal) -> dict:
    return {"prompt_tokens": final.prompt_tokens, "completion_tokens": final.completion_tokens,
            "total_tokens": final.prompt_tokens + final.completion_tokens}


def timings_of(final: chat_pb2.ChatFinal) -> dict:
    return {"time_to_first_token_s": round(final.time_to_first_token_seconds, 3),
            "total_s": round(final.total_seconds, 3), "tokens_per_second": round(final.tokens_per_second, 2)}


@router.post("/api/chat")
async def chat(request: Request, clients: ClientsDep, settings: SettingsDep, principal: ChargedPrincipalDep,
               message: str | None = MessageForm, image: UploadFile | None = ImageForm,
               conversation_id: str | None = ConversationForm, model: str | None = ModelForm) -> dict:
    """Answers in one JSON document once the model has finished (the seed's contract)."""
    chat_request, turn = await prepare(request, principal.user_id, message, image, conversation_id, model)
    call = clients.chat.Chat(chat_request, timeout=settings.chat_timeout_s, metadata=request_metadata(request))
    try:
        answer = await collect_answer(call)
    except grpc.aio.AioRpcError as error:
        raise from_grpc(error, "chat") from None
    body = {"model": answer.model, "message": {"role": "assistant", "content": answer.text}, "done": True,
            "done_reason": FINISH_NAMES.get(answer.final.finish_reason, "stop"),
            "usage": usage_of(answer.final), "timings": timings_of(answer.final)}
    if turn:
        await turn.store_whole(answer.model, answer.text, answer.final)
        body.update(conversation_id=turn.conversation_id, message_id=turn.answer_id,
                    user_message_id=turn.user_message_id)
    return body


def sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


@router.post("/api/chat/stream", responses=SSE_OPENAPI)
async def chat_stream(request: Request, clients: ClientsDep, settings: SettingsDep, principal: ChargedPrincipalDep,
                      quotas: QuotasDep, message: str | None = MessageForm, image: UploadFile | None = ImageForm,
                      conversation_id: str | None = ConversationForm, model: str | None = ModelForm):
    """Streams the answer as Server-Sent Events while the model generates it."""
    chat_request, turn = await prepare(request, principal.user_id, message, image, conversation_id, model)
    release_slot = quotas.open_stream(principal.user_id)
    call = clients.chat.Chat(chat_request, timeout=settings.chat_timeout_s, metadata=request_metadata(request))
    try:
        first = await first_reply(call)
        if turn:
            await turn.begin(first.model)
    except BaseException as error:
        call.cancel()
        release_slot()
        if isinstance(error, grpc.aio.AioRpcError):
            raise from_grpc(error, "chat") from None
        raise
    outcome = StreamOutcome()

    async def close() -> None:
        # The client leaving cancels the gRPC call, which stops the model.
        call.cancel()
        try:
            if turn:
                await turn.end(outcome.final, outcome.failure)
        finally:
            release_slot()

    meta = {"model": first.model}
    if turn:
        meta.update(conversation_id=turn.conversation_id, message_id=turn.answer_id,
                    user_message_id=turn.user_message_id)
    return ClosingStreamingResponse(_events(call, first, meta, settings.sse_heartbeat_s, turn, outcome),
                                    on_close=close, media_type="text/event-stream", headers=SSE_HEADERS)


async def _events(call, first: chat_pb2.ChatResponse, meta: dict, heartbeat_s: float, turn: Turn | None,
                  outcome: StreamOutcome) -> AsyncIterator[str]:
    """SSE lines from the gRPC stream; `outcome` records how it ended."""
    yield sse("meta", meta)
    try:
        async for reply in with_heartbeats(call, first, heartbeat_s):
            if reply is None:
                yield ": heartbeat\n\n"
                continue
            if reply.delta:
                if turn:
                    await turn.add(reply.delta)
                yield sse("delta", {"content": reply.delta})
            if reply.HasField("final"):
                outcome.final = reply.final
                if turn:  # stored before "done", so a client that reads the conversation next finds it complete
                    await turn.end(reply.final)
                yield sse("done", {"done_reason": FINISH_NAMES.get(reply.final.finish_reason, "stop"),
                                   "usage": usage_of(reply.final), "timings": timings_of(reply.final)})
    except grpc.aio.AioRpcError as error:
        outcome.failure = from_grpc(error, "chat")
        yield sse("error", outcome.failure.body())
