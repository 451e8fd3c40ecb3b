"""The Whisper model, loaded once, and a typed ``transcribe`` around it.

faster-whisper returns a lazy generator of segments plus an info object; the
engine drains it inside the worker thread (so the event loop never runs model
code) and returns plain frozen dataclasses the servicer can convert to protos.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from .audio import SAMPLE_RATE
from .errors import InvalidOptions
from .model_store import ModelSource

logger = logging.getLogger(__name__)

# Beam width multiplies decoder work; past ~10 accuracy stops improving, so a
# cap keeps one request from monopolising a worker.
MAX_BEAM_SIZE = 16

# Silence put before every clip. Whisper tends to drop or garble the first
# word when speech starts at the very first sample (espeak clips, live
# utterances cut by VAD, recordings started mid-word): "Hola, quiero…" came out
# as "Quiero…" and "La casa tiene un jardín" as "la casa y el enjad" without it,
# right with it. The window is 30 s anyway, so it costs nothing; times are
# shifted back so they still count from the clip's own start.
LEAD_IN_SECONDS = 0.5

Task = Literal["transcribe", "translate"]


@dataclass(frozen=True)
class TranscribeOptions:
    """Per-request decoding options, already resolved against service defaults."""

    language: str | None  # None = detect
    task: Task = "transcribe"
    beam_size: int = 5
    initial_prompt: str | None = None
    word_timestamps: bool = False
    # Whisper re-decodes at higher temperatures when a result looks wrong
    # (repetitive or unlikely). Worth it for results people keep; live interims
    # turn it off: on half a word it can cost 5x a normal pass, for text that
    # is replaced a second later.
    temperature_fallback: bool = True


@dataclass(frozen=True)
class Word:
    text: str
    start: float
    end: float
    probability: float


@dataclass(frozen=True)
class Segment:
    text: str
    start: float
    end: float
    avg_logprob: float
    no_speech_probability: float
    words: tuple[Word, ...] = ()


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    language_probability: float
    duration: float  # seconds of decoded audio
    segments: tuple[Segment, ...] = field(default_factory=tuple)
    processing_seconds: float = 0.0


@dataclass(frozen=True)
class EngineConfig:
    """How to place the model: the raw settings values, "auto" still unresolved."""

    device: str = "auto"
    compute_type: str = "auto"
    cpu_threads: int = 0
    workers: int = 1


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when CTranslate2 can see a CUDA device, else ``cpu``."""
    if device != "auto":
        return device
    import ctranslate2  # deferred: importing it probes CUDA, not an import-time job

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


def resolve_compute_type(compute_type: str, device: str) -> str:
    """``auto`` → int8 on CPU (fastest, tiny accuracy cost), float16 on GPU."""
    if compute_type != "auto":
        return compute_type
    return "float16" if device == "cuda" else "int8"


class WhisperEngine:
    """One loaded ``WhisperModel``; safe to call from ``workers`` threads at once."""

    def __init__(self, model, name: str, device: str, compute_type: str) -> None:
        self._model = model
        self.name = name
        self.device = device
        self.compute_type = compute_type
        self.languages = frozenset(model.supported_languages)

    @classmethod
    def load(cls, source: ModelSource, name: str, config: EngineConfig) -> WhisperEngine:
        """Load the model (seconds to minutes: call it off the event loop)."""
        from faster_whisper import WhisperModel  # heavy import, kept out of import time

        device = resolve_device(config.device)
        compute_type = resolve_compute_type(config.compute_type, device)
        started = time.perf_counter()
        model = WhisperModel(
            source.model,
            device=device,
            compute_type=compute_type,
            # CTranslate2 defaults to 4 threads whatever the machine; one per
            # core avoids oversubscribing small machines and idling big ones.
            cpu_threads=config.cpu_threads or (os.cpu_count() or 1),
            # One model replica per worker thread, so workers run in parallel.
            num_workers=config.workers,
            download_root=source.download_root,
        )
        logger.info(
            "loaded Whisper %s (%s) on %s/%s in %.2f s",
            name,
            source.origin,
            device,
            compute_type,
            time.perf_counter() - started,
        )
        return cls(model, name, device, compute_type)

    def check_options(self, options: TranscribeOptions) -> None:
        """Refuse options the model cannot honour, before any decoding work."""
        if options.language is not None and options.language not in self.languages:
            raise InvalidOptions(
                f"unknown language {options.language!r}: use an ISO 639-1 code "
                "such as 'es' or 'en', or an empty string to detect"
            )
        if not 1 <= options.beam_size <= MAX_BEAM_SIZE:
            raise InvalidOptions(
                f"beam_size must be between 1 and {MAX_BEAM_SIZE}; got {options.beam_size}"
            )

    def transcribe(self, samples: np.ndarray, options: TranscribeOptions) -> Transcript:
        """Transcribe 16 kHz mono float32 ``samples``; blocking, CPU/GPU heavy."""
        self.check_options(options)
        started = time.perf_counter()
        lead_in = np.zeros(int(LEAD_IN_SECONDS * SAMPLE_RATE), dtype=np.float32)
        extra = {} if options.temperature_fallback else {"temperature": 0.0}
        segments, info = self._model.transcribe(
            np.concatenate([lead_in, samples]),
            language=options.language,
            task=options.task,
            beam_size=options.beam_size,
            initial_prompt=options.initial_prompt or None,
            word_timestamps=options.word_timestamps,
            # Silero VAD drops non-speech before decoding: without it Whisper
            # "hears" stock phrases in silence or noise (its best-known failure).
            vad_filter=True,
            **extra,
        )
        duration = samples.size / SAMPLE_RATE
        # Draining the generator runs the decoder.
        decoded = tuple(_segment(segment, LEAD_IN_SECONDS, duration) for segment in segments)
        return Transcript(
            text=" ".join(s.text for s in decoded if s.text),
            language=info.language,
            language_probability=float(info.language_probability),
            duration=duration,
            segments=decoded,
            processing_seconds=time.perf_counter() - started,
        )


def _segment(segment, offset: float, duration: float) -> Segment:
    """faster-whisper's Segment → ours (text trimmed: Whisper adds a leading space).

    Times are moved back by ``offset`` (the lead-in) and kept within the clip.
    """

    def at(seconds: float) -> float:
        return min(max(float(seconds) - offset, 0.0), duration)

    return Segment(
        text=segment.text.strip(),
        start=at(segment.start),
        end=at(segment.end),
        avg_logprob=float(segment.avg_logprob),
        no_speech_probability=float(segment.no_speech_prob),
        words=tuple(
            Word(w.word.strip(), at(w.start), at(w.end), float(w.probability))
            for w in segment.words or ()
        ),
    )
