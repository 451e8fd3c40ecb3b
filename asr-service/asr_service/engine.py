"""What every Whisper engine takes and returns, the interface they share, and
the registry that picks one by name (ASR_ENGINE).

Two engines implement ``Engine``:

- ``faster-whisper`` (default, ``faster_whisper_engine.py``): CTranslate2,
  int8 on CPU, the packaged base model, no PyTorch;
- ``openai-whisper`` (``openai_whisper_engine.py``): the reference PyTorch
  implementation, for users who hold ``.pt`` checkpoints, and for GPU hosts
  whose CUDA CTranslate2 cannot use (DESIGN.md §6). Optional extra
  ``asr-service[openai-whisper]``.

The registry maps a name to ``"module:Class"`` and imports on demand, so the
default process never imports torch, and a missing optional engine is a
start-up error naming the extra to install rather than an import error at
import time. Engines return plain frozen dataclasses (below) that the
servicer converts to protos; they know nothing about gRPC.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from .errors import InvalidOptions, ModelProvisioningError
from .language_detection import LanguageDetection

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
    # May this request's audio share model passes with other requests'
    # (ASR_BATCH_SIZE > 1)? Live dictation says no (streaming.py): its
    # interims are latency-bound and it has not been tested batched.
    batchable: bool = True
    # faster-whisper, unbatched: the encoder window step for this request only
    # (encoder_window.py); None = the service's ASR_ENCODER_WINDOW_S. Live
    # interims use a short one: they are replaced a second later, and the final
    # of the same speech is decoded with the service's window.
    encoder_window_s: int | None = None


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
    # Chunks in the largest model pass this request's audio went through
    # (batching.py): 1 unbatched, >1 when decoded together with other
    # chunks, of this or other requests; 0 when no audio reached the model.
    batch_size: int = 1


@dataclass(frozen=True)
class EngineConfig:
    """How to place the model: the raw settings values, "auto" still unresolved."""

    device: str = "auto"
    compute_type: str = "auto"
    cpu_threads: int = 0
    workers: int = 1
    batch_size: int = 1  # chunks per model pass; 0 = engine's choice for the device
    batch_window: float = 0.01  # seconds a chunk may wait for others to batch with
    encoder_window_s: int = 30  # faster-whisper: window step (encoder_window.py); 30 = the whole window
    # How many 30 s windows detection may look at, and when one is sure enough.
    language_detection: LanguageDetection = LanguageDetection()


@runtime_checkable
class Engine(Protocol):
    """A loaded Whisper model; ``transcribe`` is safe to call from worker threads."""

    engine: str  # registry name, e.g. "faster-whisper"
    name: str  # the model as configured (ASR_MODEL)
    device: str  # resolved: "cpu" or "cuda"
    compute_type: str  # resolved: "int8", "float16", "float32"…
    languages: frozenset[str]

    def check_options(self, options: TranscribeOptions) -> None:
        """Raise ``InvalidOptions`` for options the model cannot honour."""

    def transcribe(self, samples: np.ndarray, options: TranscribeOptions) -> Transcript:
        """Transcribe 16 kHz mono float32 ``samples``; blocking, CPU/GPU heavy."""


class EngineLoader(Protocol):
    def load(self, model: str, models_dir: Path, config: EngineConfig) -> Engine: ...


# name → ("module:Class", pip extra that provides it, or None if always installed)
ENGINES: dict[str, tuple[str, str | None]] = {
    "faster-whisper": ("asr_service.faster_whisper_engine:FasterWhisperEngine", None),
    "openai-whisper": ("asr_service.openai_whisper_engine:OpenAIWhisperEngine", "openai-whisper"),
}


def engine_class(name: str) -> EngineLoader:
    """Import the engine registered as ``name`` (only now: torch is heavy)."""
    try:
        target, extra = ENGINES[name]
    except KeyError:
        raise ModelProvisioningError(
            f"unknown ASR_ENGINE {name!r}; use one of {', '.join(ENGINES)}"
        ) from None
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        hint = f": install asr-service[{extra}]" if extra else ""
        raise ModelProvisioningError(
            f"ASR_ENGINE={name} needs {error.name or 'a package'} that is not installed{hint}"
        ) from error
    return getattr(module, class_name)


def load_engine(name: str, model: str, models_dir: Path, config: EngineConfig) -> Engine:
    """Load ``model`` with the engine registered as ``name``; blocking (seconds)."""
    return engine_class(name).load(model, models_dir, config)


def check_options(options: TranscribeOptions, languages: frozenset[str]) -> None:
    """The checks every engine shares: a known language and a sane beam width."""
    if options.language is not None and options.language not in languages:
        raise InvalidOptions(
            f"unknown language {options.language!r}: use an ISO 639-1 code "
            "such as 'es' or 'en', or an empty string to detect"
        )
    if not 1 <= options.beam_size <= MAX_BEAM_SIZE:
        raise InvalidOptions(
            f"beam_size must be between 1 and {MAX_BEAM_SIZE}; got {options.beam_size}"
        )


def first_line(error: BaseException) -> str:
    """An exception's first line, for one-line start-up failures."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
