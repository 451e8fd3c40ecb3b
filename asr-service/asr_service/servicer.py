"""The gRPC face of the service: proto in, domain call, proto out. Nothing else.

Validation that needs no model (size, option shapes) happens on the event
loop before a worker slot is taken; decoding and transcription run in the
bounded worker pool. Errors are raised as domain exceptions and turned into
statuses by ``errors.unary_errors`` / ``errors.stream_errors`` (one table for
the whole service). StreamingTranscribe's utterance logic lives in
``streaming.py``; here it only checks the protocol (config first, chunk size).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import numpy as np
from chatbot_protos.asr.v1 import asr_pb2, asr_pb2_grpc

from .audio import decode_audio
from .config import MIB, Settings
from .engine import Engine, Task, TranscribeOptions, Transcript
from .errors import (
    AudioTooLarge,
    ChunkTooLarge,
    InvalidOptions,
    InvalidRequest,
    ModelNotReady,
    stream_errors,
    unary_errors,
)
from .streaming import MAX_CHUNK_BYTES, StreamResult, UtteranceTracker, transcribe_stream
from .worker_pool import BoundedWorkerPool

logger = logging.getLogger(__name__)

SERVICE_NAME = asr_pb2.DESCRIPTOR.services_by_name["Transcription"].full_name

# Trailing metadata of a Transcribe reply: Transcript.batch_size (engine.py).
BATCH_SIZE_METADATA_KEY = "asr-batch-size"

_TASKS: dict[int, Task] = {
    asr_pb2.TASK_UNSPECIFIED: "transcribe",
    asr_pb2.TASK_TRANSCRIBE: "transcribe",
    asr_pb2.TASK_TRANSLATE: "translate",
}


class TranscriptionServicer(asr_pb2_grpc.TranscriptionServicer):
    """``chatbot.asr.v1.Transcription``; the engine is attached once it has loaded."""

    def __init__(self, settings: Settings, pool: BoundedWorkerPool) -> None:
        self._settings = settings
        self._pool = pool
        self._engine: Engine | None = None

    def attach_engine(self, engine: Engine) -> None:
        self._engine = engine

    @unary_errors
    async def Transcribe(self, request: asr_pb2.TranscribeRequest, context) -> asr_pb2.TranscribeResponse:
        audio = request.audio  # read once: each access may copy the bytes
        self._check_size(audio)
        engine = self._ready_engine()
        options = options_from_pb(request.options, self._settings)
        engine.check_options(options)
        transcript = await self._pool.run(self._decode_and_transcribe, engine, audio, options)
        logger.info(
            "transcribed %.1f s of %s in %.2f s (%s, %d chars, batch %d)",
            transcript.duration,
            request.mime_type or "audio",
            transcript.processing_seconds,
            transcript.language,
            len(transcript.text),
            transcript.batch_size,
        )
        # How many chunks shared the largest model pass of this request: lets a
        # client (and the tests) see batching happen without reading logs.
        context.set_trailing_metadata(((BATCH_SIZE_METADATA_KEY, str(transcript.batch_size)),))
        return transcript_to_pb(transcript, engine.name)

    @stream_errors
    async def StreamingTranscribe(self, request_iterator, context):
        requests = request_iterator.__aiter__()
        config = await _first_config(requests)
        engine = self._ready_engine()
        options = options_from_pb(config.options, self._settings)
        engine.check_options(options)
        tracker = UtteranceTracker(engine, options)
        started = time.perf_counter()
        request_id = dict(context.invocation_metadata() or ()).get("x-request-id", "-")
        try:
            async for result in transcribe_stream(
                _audio_chunks(requests), tracker, self._pool,
                max_bytes=self._settings.max_upload_bytes,
                max_seconds=self._settings.max_audio_seconds,
            ):
                yield result_to_pb(result)
        except (asyncio.CancelledError, GeneratorExit):
            # Cancelled while awaiting (a model step, the next chunk), or closed at
            # a yield because gRPC stopped consuming (the client went away while a
            # result was being sent): either way no further step runs.
            logger.info("[%s] streaming transcription of %s cancelled by the client after %.1f s",
                        request_id, config.mime_type or "audio", time.perf_counter() - started)
            raise
        logger.info("[%s] streamed %s for %.1f s: %d finals, %d interims",
                    request_id, config.mime_type or "audio", time.perf_counter() - started,
                    tracker.finals, tracker.interims_sent)

    @unary_errors
    async def ListModels(self, request: asr_pb2.ListModelsRequest, context) -> asr_pb2.ListModelsResponse:
        return asr_pb2.ListModelsResponse(models=[model_info_to_pb(self._engine, self._settings)])

    def _check_size(self, audio: bytes) -> None:
        """Refuse an oversized upload before any decoding (MAX_UPLOAD_MB)."""
        limit = self._settings.max_upload_bytes
        if len(audio) > limit:
            raise AudioTooLarge(
                f"audio is too large: {len(audio) / MIB:.1f} MiB; the limit is "
                f"{self._settings.max_upload_mb} MiB (MAX_UPLOAD_MB)"
            )

    def _ready_engine(self) -> Engine:
        if self._engine is None:
            raise ModelNotReady("the Whisper model is still loading; retry shortly")
        return self._engine

    def _decode_and_transcribe(
        self, engine: Engine, audio: bytes, options: TranscribeOptions
    ) -> Transcript:
        """Worker-thread job; its wall time is what the response reports."""
        started = time.perf_counter()
        samples: np.ndarray = decode_audio(audio, self._settings.max_audio_seconds)
        transcript = engine.transcribe(samples, options)
        return replace(transcript, processing_seconds=time.perf_counter() - started)


async def _first_config(requests) -> asr_pb2.StreamingConfig:
    """The stream's first message, which must be the config."""
    try:
        first = await requests.__anext__()
    except StopAsyncIteration:
        raise InvalidRequest("the stream ended before its config message") from None
    if first.WhichOneof("request") != "config":
        raise InvalidRequest(
            "the first message of StreamingTranscribe must be the config "
            "(mime type and options); audio chunks come after it"
        )
    return first.config


async def _audio_chunks(requests) -> AsyncIterator[bytes]:
    """The audio chunks after the config, each checked against the 16 KiB limit."""
    async for request in requests:
        kind = request.WhichOneof("request")
        if kind == "config":
            raise InvalidRequest("the config message may be sent only once, first")
        if kind is None:
            continue  # an empty message carries nothing
        chunk = request.audio_chunk
        if len(chunk) > MAX_CHUNK_BYTES:
            raise ChunkTooLarge(
                f"audio chunk is too large: {len(chunk)} bytes; the limit is "
                f"{MAX_CHUNK_BYTES} bytes (16 KiB) per message"
            )
        yield chunk


def result_to_pb(result: StreamResult) -> asr_pb2.StreamingTranscribeResponse:
    return asr_pb2.StreamingTranscribeResponse(
        text=result.text, is_final=result.is_final, stability=result.stability,
        language=result.language, start_seconds=result.start, end_seconds=result.end,
    )


def options_from_pb(options: asr_pb2.TranscriptionOptions, settings: Settings) -> TranscribeOptions:
    """Proto options → domain options, filling service defaults.

    Language: unset → ASR_LANGUAGE; explicit "" → detect (as does an empty
    ASR_LANGUAGE).
    """
    if options.HasField("language"):
        language = options.language.strip().lower()
    else:
        language = settings.language
    task = _TASKS.get(options.task)
    if task is None:
        raise InvalidOptions(f"unknown task {options.task}; use TASK_TRANSCRIBE or TASK_TRANSLATE")
    return TranscribeOptions(
        language=language or None,
        task=task,
        beam_size=options.beam_size or settings.beam_size,
        initial_prompt=options.initial_prompt or None,
        word_timestamps=options.word_timestamps,
    )


def model_info_to_pb(engine: Engine | None, settings: Settings) -> asr_pb2.ModelInfo:
    """The configured model; what only loading reveals is left empty until then."""
    info = asr_pb2.ModelInfo(
        name=settings.model, engine=settings.engine,
        default_language=settings.language, loaded=engine is not None,
    )
    if engine is not None:
        info.device = engine.device
        info.compute_type = engine.compute_type
        info.languages.extend(sorted(engine.languages))
    return info


def transcript_to_pb(transcript: Transcript, model_name: str) -> asr_pb2.TranscribeResponse:
    """Domain transcript → proto response."""
    return asr_pb2.TranscribeResponse(
        text=transcript.text,
        language=transcript.language,
        language_probability=transcript.language_probability,
        duration_seconds=transcript.duration,
        processing_seconds=transcript.processing_seconds,
        model=model_name,
        segments=[
            asr_pb2.Segment(
                text=segment.text,
                start_seconds=segment.start,
                end_seconds=segment.end,
                avg_logprob=segment.avg_logprob,
                no_speech_probability=segment.no_speech_probability,
                words=[
                    asr_pb2.Word(
                        text=word.text,
                        start_seconds=word.start,
                        end_seconds=word.end,
                        probability=word.probability,
                    )
                    for word in segment.words
                ],
            )
            for segment in transcript.segments
        ],
    )
