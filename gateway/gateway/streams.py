"""Streaming responses that always clean up after themselves."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
from chatbot_protos.chat.v1 import chat_pb2
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from .errors import ApiError

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# OpenAPI for routes that answer with a stream: without it the schema promised
# only application/json, which schemathesis flagged (tests/hostile/test_fuzz.py).
SSE_OPENAPI = {200: {"description": "JSON, or with streaming a text/event-stream of events",
                     "content": {"text/event-stream": {"schema": {  # the schema of one event
                         "type": "object", "properties": {"event": {"type": "string"}, "data": {"type": "string"}}}}}}}


class ClosingStreamingResponse(StreamingResponse):
    """Runs `on_close` once the response ends, however it ends: finished,
    failed, or the client gone before or during the stream.

    A generator's own `finally` is not enough: Starlette may never start the
    generator when the client leaves first, and once the client is gone its
    cancellation interrupts every await in a `finally`. `on_close` runs shielded,
    so it can still cancel the model call, store the answer and free the slot.
    """

    def __init__(self, content, on_close: Callable[[], Awaitable[None]], **kwargs) -> None:
        super().__init__(content, **kwargs)
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.on_close()


@dataclass
class StreamOutcome:
    """How a chat stream ended, as the generator saw it (both None: cut short)."""

    final: chat_pb2.ChatFinal | None = None
    failure: ApiError | None = None
