"""The gRPC face of the service: proto in, domain call, proto out. Nothing else.

Validation that needs no model (size, option shapes) happens on the event
loop before a worker slot is taken; decoding and transcription run in the
bounded worker pool. Errors are raised as domain exceptions and turned into
statuses by ``errors.unary_errors`` (one table for the whole service).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import grpc
import numpy as np
from chatbot_protos.asr.v1 import asr_pb2, asr_pb2_grpc

from .audio import decode_audio
from .config import MIB, Settings
from .engine import Task, TranscribeOptions, Transcript, WhisperEngine
from .errors import AudioTooLarge, InvalidOptions, ModelNotReady, unary_errors
from .worker_pool import BoundedWorkerPool

logger = logging.getLogger(__name__)

SERVICE_NAME = asr_pb2.DESCRIPTOR.services_by_name["Transcription"].full_name

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
        self._engine: WhisperEngine | None = None

    def attach_engine(self, engine: WhisperEngine) -> None:
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
            "transcribed %.1f s of %s in %.2f s (%s, %d chars)",
            transcript.duration,
            request.mime_type or "audio",
            transcript.processing_seconds,
            transcript.language,
            len(transcript.text),
        )
        return transcript_to_pb(transcript, engine.name)

    async def StreamingTranscribe(self, request_iterator, context) -> None:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "StreamingTranscribe is planned but not implemented yet; "
            "send the whole clip to Transcribe instead",
        )

    def _check_size(self, audio: bytes) -> None:
        """Refuse an oversized upload before any decoding (MAX_UPLOAD_MB)."""
        limit = self._settings.max_upload_bytes
        if len(audio) > limit:
            raise AudioTooLarge(
                f"audio is too large: {len(audio) / MIB:.1f} MiB; the limit is "
                f"{self._settings.max_upload_mb} MiB (MAX_UPLOAD_MB)"
            )

    def _ready_engine(self) -> WhisperEngine:
        if self._engine is None:
            raise ModelNotReady("the Whisper model is still loading; retry shortly")
        return self._engine

    def _decode_and_transcribe(
        self, engine: WhisperEngine, audio: bytes, options: TranscribeOptions
    ) -> Transcript:
        """Worker-thread job; its wall time is what the response reports."""
        started = time.perf_counter()
        samples: np.ndarray = decode_audio(audio, self._settings.max_audio_seconds)
        transcript = engine.transcribe(samples, options)
        return replace(transcript, processing_seconds=time.perf_counter() - started)


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
