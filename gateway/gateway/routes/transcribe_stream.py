"""Live dictation: WebSocket `/api/transcribe/stream` ⇄ gRPC `StreamingTranscribe`.

Protocol (the browser's side):
- first frame, text: `{"mime_type": "audio/webm;codecs=opus", "language": "es"}`
  (`language` optional: absent = the service default, `"auto"` = detect);
- then binary frames: the MediaRecorder stream as it is recorded, any size
  (the gateway cuts them into the ≤ 16 KiB messages the gRPC contract takes);
- then, optionally, a text frame `{"type": "end"}` when recording stops: the
  remaining audio is transcribed and its final results sent before the
  gateway closes the socket normally (1000).
Events (text frames, JSON): `{"type": "interim"|"final", "text", "language",
"stability", "start", "end"}`; a failure is `{"type": "error", "error",
"error_type"}` followed by a close with code 4000 + the HTTP status the same
error gets elsewhere (4400, 4413, 4429, 4503…).
Closing the socket early cancels the gRPC call, which stops the service's work.
The caller is authenticated like any request (API key header or session
cookie); a refusal (4401, 4429: rate or stream limit) comes as an error event.
Each socket is counted in /metrics when it ends (DictationMetrics below).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid

import grpc
from chatbot_protos.asr.v1 import asr_pb2
from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from ..auth import principal_of
from ..errors import ApiError, bad_request, from_grpc
from .transcribe import options_for

log = logging.getLogger(__name__)

router = APIRouter(tags=["speech"])

CHUNK_BYTES = 16 * 1024  # StreamingTranscribeRequest.audio_chunk limit (asr.proto)
# The label grpc_metrics.py would give it: its interceptors see unary calls and
# server streams only, so this bidirectional stream is counted here.
STREAM_METHOD = "Transcription/StreamingTranscribe"


class DictationMetrics:
    """What one dictation socket adds to /metrics (observability/metrics.py):
    audio and results as they pass, and at the end its outcome and, when the
    user ended it, how long the last final result took after their end frame."""

    def __init__(self, metrics) -> None:
        self.metrics = metrics
        self.outcome = "completed"
        self.end_frame_at: float | None = None

    def audio(self, size: int) -> None:
        self.metrics.dictation_audio_bytes.inc(size)

    def result(self, reply: asr_pb2.StreamingTranscribeResponse) -> None:
        self.metrics.dictation_results.labels("final" if reply.is_final else "interim").inc()

    def call_opened(self) -> None:
        self.metrics.backend_in_flight.labels(STREAM_METHOD).inc()

    def call_closed(self, failure: grpc.StatusCode | None) -> None:
        self.metrics.backend_in_flight.labels(STREAM_METHOD).dec()
        if failure is not None:
            self.metrics.backend_errors.labels(STREAM_METHOD, failure.name).inc()

    def finished(self) -> None:
        """The last final result is sent; the socket closes normally."""
        if self.end_frame_at is not None:
            self.metrics.dictation_finish_seconds.observe(time.perf_counter() - self.end_frame_at)

    def __enter__(self) -> "DictationMetrics":
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is asyncio.CancelledError:
            self.outcome = "cancelled"  # the gateway is stopping
        elif exc_type is not None:
            self.outcome = "internal_error"
        self.metrics.dictation_streams.labels(self.outcome).inc()


def config_from(text: str | None) -> asr_pb2.StreamingTranscribeRequest:
    """The first frame → the gRPC config message (ApiError 400 when malformed)."""
    try:
        fields = json.loads(text) if text is not None else None
    except json.JSONDecodeError:
        fields = None
    if not isinstance(fields, dict):
        raise bad_request('the first frame must be JSON text: {"mime_type": "...", "language": "es"}')
    mime_type, language = fields.get("mime_type", ""), fields.get("language")
    if not isinstance(mime_type, str) or not (language is None or isinstance(language, str)):
        raise bad_request("mime_type and language must be strings")
    return asr_pb2.StreamingTranscribeRequest(
        config=asr_pb2.StreamingConfig(mime_type=mime_type, options=options_for(language)))


def event_of(reply: asr_pb2.StreamingTranscribeResponse) -> dict:
    return {"type": "final" if reply.is_final else "interim", "text": reply.text,
            "language": reply.language, "stability": round(reply.stability, 3),
            "start": round(reply.start_seconds, 3), "end": round(reply.end_seconds, 3)}


async def _pump_audio(websocket: WebSocket, call, gone: asyncio.Event, observed: DictationMetrics) -> None:
    """Browser frames → gRPC messages, until `end` (half-close) or disconnect (cancel)."""
    try:
        await _relay_frames(websocket, call, gone, observed)
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError, RuntimeError, WebSocketDisconnect) as error:
        # The call already ended (its status reaches the reader) or the socket closed.
        log.debug("audio relay stopped: %r", error)


async def _relay_frames(websocket: WebSocket, call, gone: asyncio.Event, observed: DictationMetrics) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            gone.set()
            call.cancel()
            return
        data = message.get("bytes")
        if data is not None:
            observed.audio(len(data))
            for start in range(0, len(data), CHUNK_BYTES):
                await call.write(asr_pb2.StreamingTranscribeRequest(audio_chunk=data[start:start + CHUNK_BYTES]))
            continue
        try:
            end = json.loads(message.get("text") or "null") == {"type": "end"}
        except json.JSONDecodeError:
            end = False
        if end:
            observed.end_frame_at = time.perf_counter()
            await call.done_writing()
            # Keep listening: a client that leaves now still cancels the call.
            disconnect = await websocket.receive()
            if disconnect["type"] == "websocket.disconnect":
                gone.set()
                call.cancel()
            return


@router.websocket("/api/transcribe/stream")
async def transcribe_stream(websocket: WebSocket) -> None:
    """Transcribes a live recording while it is made: audio frames in, JSON events out."""
    settings, clients = websocket.app.state.settings, websocket.app.state.clients
    request_id = websocket.headers.get("x-request-id") or uuid.uuid4().hex
    with DictationMetrics(websocket.app.state.metrics) as observed:
        # The stream slot is taken before the handshake completes, so a client
        # whose socket is open holds it (a request sent next counts against it).
        # A refusal still accepts first: browsers see close codes and events,
        # never a refused handshake's status.
        try:
            principal = await principal_of(websocket)
            quotas = websocket.app.state.quotas
            quotas.charge(principal.user_id)
            release_slot = quotas.open_stream(principal.user_id)
        except ApiError as error:
            await websocket.accept()
            await _fail(websocket, error, observed)
            return
        try:
            await websocket.accept()
            await _transcribe(websocket, settings, clients, request_id, observed)
        finally:
            release_slot()


async def _transcribe(websocket: WebSocket, settings, clients, request_id: str, observed: DictationMetrics) -> None:
    try:
        first = await websocket.receive()
        if first["type"] == "websocket.disconnect":
            observed.outcome = "client_left"
            return
        config = config_from(first.get("text"))
    except ApiError as error:
        await _fail(websocket, error, observed)
        return

    call = clients.asr.StreamingTranscribe(timeout=settings.transcribe_timeout_s,
                                           metadata=(("x-request-id", request_id),))
    observed.call_opened()
    gone = asyncio.Event()
    pump: asyncio.Task | None = None
    failure: grpc.StatusCode | None = None
    try:
        await call.write(config)
        pump = asyncio.create_task(_pump_audio(websocket, call, gone, observed))
        async for reply in call:
            await websocket.send_json(event_of(reply))
            observed.result(reply)
        pump.cancel()  # before closing, so our own close is not taken for the client's
        observed.finished()
        await websocket.close(1000)
    except grpc.aio.AioRpcError as error:
        failure = error.code()
        if not gone.is_set():
            await _fail(websocket, from_grpc(error, "speech recognition"), observed)
    except asyncio.CancelledError:
        # grpc.aio raises CancelledError from a call that was cancelled locally
        # (the browser left); a cancellation of this task itself goes on.
        task = asyncio.current_task()
        if not gone.is_set() or (task is not None and task.cancelling()):
            raise
    except (WebSocketDisconnect, RuntimeError):  # the browser left while we were sending
        gone.set()
    finally:
        if pump is not None:
            pump.cancel()
        call.cancel()  # no-op when the call is already over
        if gone.is_set():
            observed.outcome = "client_left"
            failure = failure or grpc.StatusCode.CANCELLED
            log.info("transcription stream closed by the client; gRPC call cancelled")
        observed.call_closed(failure)


async def _fail(websocket: WebSocket, error: ApiError, observed: DictationMetrics) -> None:
    """Send the error event and close with 4000 + its HTTP status."""
    observed.outcome = error.error_type
    if websocket.client_state != WebSocketState.CONNECTED:
        return
    try:
        await websocket.send_json({"type": "error", **error.body()})
        await websocket.close(4000 + error.status if 400 <= error.status <= 599 else 1011)
    except (WebSocketDisconnect, RuntimeError):
        pass
