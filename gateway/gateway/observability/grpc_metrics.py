"""gRPC client interceptors that measure what the model services do for us.

They sit on the gateway's channels, so every route that chats or transcribes
is measured the same way without knowing about metrics:
- Chat (server-streaming): time to first generated text, tokens per second
  after it, prompt and completion tokens, by the model that answered;
- Transcribe: latency and seconds of audio;
- any call: failures by method and status code (a stream that fails midway,
  or is cancelled because the client left, counts too).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc

from .metrics import GatewayMetrics

CHAT_METHOD = "/chatbot.chat.v1.ChatService/Chat"
TRANSCRIBE_METHOD = "/chatbot.asr.v1.Transcription/Transcribe"


def _method(details: grpc.aio.ClientCallDetails) -> str:
    method = details.method
    return method.decode() if isinstance(method, bytes) else str(method)


def _short(method: str) -> str:
    """"/chatbot.chat.v1.ChatService/Chat" → "ChatService/Chat" (a bounded label)."""
    service, _, name = method.rpartition("/")
    return f"{service.rsplit('.', 1)[-1]}/{name}"


class _UnaryObserver(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        started = time.perf_counter()
        method = _method(client_call_details)
        in_flight = self.metrics.backend_in_flight.labels(_short(method))
        in_flight.inc()
        try:
            call = await continuation(client_call_details, request)
            response = await call
        except grpc.aio.AioRpcError as error:
            self.metrics.backend_errors.labels(_short(method), error.code().name).inc()
            return call  # the caller's own await raises the same error
        finally:
            in_flight.dec()
        if method == TRANSCRIBE_METHOD:
            self.metrics.transcribe_seconds.observe(time.perf_counter() - started)
            self.metrics.audio_seconds.inc(max(0.0, response.duration_seconds))
            self.metrics.transcriptions.inc()
        return call


class _StreamObserver(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics

    async def intercept_unary_stream(self, continuation, client_call_details, request):
        started = time.perf_counter()
        method = _method(client_call_details)
        call = await continuation(client_call_details, request)
        in_flight = self.metrics.backend_in_flight.labels(_short(method))
        in_flight.inc()
        # A stream the gateway cancels (its client left) is no longer read, so
        # the generator below never sees it end: the call's own callback does.
        call.add_done_callback(lambda done: (in_flight.dec(), self._count_cancelled(done, method)))
        # An async generator in place of the call: grpc.aio wraps it so that
        # read(), iteration and cancel() work as on the plain call.
        return self._observe(call, method, started)

    def _count_cancelled(self, call, method: str) -> None:
        if call.cancelled():
            self.metrics.backend_errors.labels(_short(method), grpc.StatusCode.CANCELLED.name).inc()

    async def _observe(self, call, method: str, started: float) -> AsyncIterator:
        first_text_at, model = None, ""
        try:
            async for reply in call:
                if method == CHAT_METHOD:
                    model = reply.model or model
                    if first_text_at is None and reply.delta:
                        first_text_at = time.perf_counter()
                        self.metrics.chat_ttft.labels(model).observe(first_text_at - started)
                    if reply.HasField("final"):
                        self._chat_done(model, reply.final, first_text_at)
                yield reply
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:  # counted by _count_cancelled
                self.metrics.backend_errors.labels(_short(method), error.code().name).inc()
            raise

    def _chat_done(self, model: str, final, first_text_at: float | None) -> None:
        self.metrics.chat_tokens.labels(model, "prompt").inc(final.prompt_tokens)
        self.metrics.chat_tokens.labels(model, "completion").inc(final.completion_tokens)
        if first_text_at is not None and final.completion_tokens > 1:
            # Decoding speed: the tokens after the first, over the time after it.
            elapsed = time.perf_counter() - first_text_at
            if elapsed > 0:
                self.metrics.chat_tokens_per_s.labels(model).observe((final.completion_tokens - 1) / elapsed)


def interceptors(metrics: GatewayMetrics) -> list[grpc.aio.ClientInterceptor]:
    return [_UnaryObserver(metrics), _StreamObserver(metrics)]
