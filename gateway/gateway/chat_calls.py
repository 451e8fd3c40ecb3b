"""Reading a Chat call from the chat service, shared by /api and /v1.

The callers map gRPC errors to their own error shapes, so these helpers let
grpc.aio.AioRpcError through.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
from chatbot_protos.chat.v1 import chat_pb2

from .errors import ApiError


@dataclass
class Answer:
    """A whole answer, for the non-streaming routes."""

    text: str
    model: str
    final: chat_pb2.ChatFinal = field(default_factory=chat_pb2.ChatFinal)


async def collect_answer(call, default_model: str = "") -> Answer:
    parts, answer = [], Answer(text="", model=default_model)
    async for reply in call:
        parts.append(reply.delta)
        answer.model = reply.model or answer.model
        if reply.HasField("final"):
            answer.final = reply.final
    answer.text = "".join(parts)
    return answer


async def first_reply(call) -> chat_pb2.ChatResponse:
    """Waits for the first reply before a streaming route answers 200, so that
    refusals (bad image, unknown model, busy, down) keep their own HTTP status."""
    first = await call.read()
    if first is grpc.aio.EOF:
        raise ApiError(502, "the chat service ended the answer without a reply", "backend_error")
    return first


async def with_heartbeats(call, first: chat_pb2.ChatResponse, heartbeat_s: float) -> AsyncIterator:
    """Replies from the call, with None whenever heartbeat_s pass without one
    (the routes then send an SSE comment so idle proxies keep the stream open)."""
    yield first
    pending = asyncio.ensure_future(call.read())
    try:
        while True:
            done, _ = await asyncio.wait({pending}, timeout=heartbeat_s)
            if not done:
                yield None
                continue
            reply = pending.result()
            if reply is grpc.aio.EOF:
                return
            yield reply
            pending = asyncio.ensure_future(call.read())
    finally:
        pending.cancel()
