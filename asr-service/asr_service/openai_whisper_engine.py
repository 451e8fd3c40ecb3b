"""The openai-whisper engine: the reference PyTorch Whisper, loaded once.

For users who hold ``.pt`` checkpoints (fine-tuned or converted ones), and for
GPU hosts whose CUDA CTranslate2 cannot use (DESIGN.md §6: that machine runs
Whisper on PyTorch). Needs the optional extra ``asr-service[openai-whisper]``;
the registry in ``engine.py`` imports this module only when ASR_ENGINE asks
for it, so the default service never imports torch.

ASR_MODEL is either a name openai-whisper knows (``tiny`` … ``large-v3``,
``turbo``), fetched once into ``MODELS_DIR/openai-whisper`` (needs internet),
or the path of a local ``.pt`` checkpoint in the format ``whisper.load_model``
reads (``{"dims": ..., "model_state_dict": ...}``).

Same behaviour as the faster-whisper engine, by the same means:
- Silero VAD (faster-whisper's, a default dependency) runs first and only the
  speech is decoded, so silence and noise give no text; times are mapped back
  to the clip's own clock;
- the 0.5 s lead-in (engine.LEAD_IN_SECONDS) goes before the speech;
- a detected language comes with its probability: openai-whisper's
  ``transcribe`` does not return one (and looks at the first 30 s only), so
  the engine runs ``model.detect_language`` itself on up to
  ASR_LANGUAGE_DETECTION_SEGMENTS 30 s windows of speech, with
  faster-whisper's rule for combining them (language_detection.py), and then
  decodes with that language.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import numpy as np
import torch
import whisper
from faster_whisper.vad import SpeechTimestampsMap, VadOptions, collect_chunks, get_speech_timestamps
from whisper.tokenizer import LANGUAGES

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
from .language_detection import LanguageDetection, first_sure_or_most_often

logger = logging.getLogger(__name__)

# Whisper's own fallback ladder (openai-whisper's transcribe default).
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_compute_type(compute_type: str, device: str) -> str:
    """``auto`` → float16 on GPU, float32 on CPU (PyTorch has no fast fp16 on CPU)."""
    if compute_type in ("auto", "default"):
        return "float16" if device == "cuda" else "float32"
    if compute_type == "float16" and device != "cuda":
        raise ModelProvisioningError(
            "ASR_COMPUTE_TYPE=float16 needs a GPU with ASR_ENGINE=openai-whisper; "
            "use float32 or auto on CPU"
        )
    return compute_type


class OpenAIWhisperEngine:
    """One loaded ``whisper.Whisper`` model.

    Calls are serialised by a lock: openai-whisper's decoder installs its
    key/value-cache hooks on the shared modules for the length of a call, so
    two threads decoding at once would corrupt each other's caches. With this
    engine ASR_WORKERS > 1 only lets requests queue inside the pool; on a GPU
    a single stream already keeps the device busy for base-sized models.
    """

    engine = "openai-whisper"

    def __init__(self, model: whisper.Whisper, name: str, device: str, compute_type: str,
                 language_detection: LanguageDetection = LanguageDetection()) -> None:
        self._model = model
        self.language_detection = language_detection
        self._lock = threading.Lock()
        self.name = name
        self.device = device
        self.compute_type = compute_type
        # English-only checkpoints (*.en, or n_vocab 51864) know one language.
        self.languages = frozenset(LANGUAGES) if model.is_multilingual else frozenset({"en"})

    @classmethod
    def load(cls, model: str, models_dir: Path, config: EngineConfig) -> OpenAIWhisperEngine:
        """Load a named model or a local ``.pt`` checkpoint; blocking."""
        device = resolve_device(config.device)
        compute_type = resolve_compute_type(config.compute_type, device)
        if device == "cpu":
            # PyTorch's default is one thread per core already, except where a
            # container limits CPUs: follow ASR_CPU_THREADS like CTranslate2 does.
            torch.set_num_threads(config.cpu_threads or (os.cpu_count() or 1))
        checkpoint, origin = _checkpoint(model)
        started = time.perf_counter()
        try:
            loaded = whisper.load_model(
                checkpoint, device=device, download_root=str(models_dir / "openai-whisper")
            )
        except Exception as error:
            raise ModelProvisioningError(_load_failure(model, origin, error)) from error
        if compute_type == "float16":
            loaded = loaded.half()
        loaded.eval()
        logger.info(
            "loaded openai-whisper %s (%s) on %s/%s in %.2f s",
            model, origin, device, compute_type, time.perf_counter() - started,
        )
        return cls(loaded, model, device, compute_type, config.language_detection)

    def check_options(self, options: TranscribeOptions) -> None:
        check_options(options, self.languages)

    def transcribe(self, samples: np.ndarray, options: TranscribeOptions) -> Transcript:
        """Transcribe 16 kHz mono float32 ``samples``; blocking, CPU/GPU heavy."""
        self.check_options(options)
        started = time.perf_counter()
        duration = samples.size / SAMPLE_RATE
        spans = get_speech_timestamps(samples, VadOptions())
        if not spans:  # silence or noise: nothing for Whisper to invent text from
            return Transcript(
                text="", language=options.language or "",
                language_probability=1.0 if options.language else 0.0,
                duration=duration, processing_seconds=time.perf_counter() - started,
            )
        speech = np.concatenate(
            [np.zeros(int(LEAD_IN_SECONDS * SAMPLE_RATE), dtype=np.float32),
             collect_chunks(samples, spans)[0][0]]
        )
        with self._lock, torch.inference_mode():
            language, probability = self._language(speech, options.language)
            result = whisper.transcribe(
                self._model,
                speech,
                language=language,
                task=options.task,
                # beam 1 is greedy decoding; openai-whisper's greedy decoder is
                # the same search without the beam bookkeeping.
                beam_size=options.beam_size if options.beam_size > 1 else None,
                initial_prompt=options.initial_prompt or None,
                word_timestamps=options.word_timestamps,
                temperature=FALLBACK_TEMPERATURES if options.temperature_fallback else 0.0,
                fp16=self.compute_type == "float16",
                verbose=None,  # no progress bar or printed text in a server
            )
        clock = _Clock(SpeechTimestampsMap(spans, SAMPLE_RATE), duration)
        segments = tuple(
            _segment(segment, clock) for segment in result["segments"] if segment["text"].strip()
        )
        return Transcript(
            text=" ".join(s.text for s in segments),
            language=language,
            language_probability=probability,
            duration=duration,
            segments=segments,
            processing_seconds=time.perf_counter() - started,
        )

    def _language(self, speech: np.ndarray, language: str | None) -> tuple[str, float]:
        """The given language (probability 1), or the one detected in the speech.

        Detection looks at up to ``language_detection.segments`` 30 s windows
        of ``speech``, one model pass each, stopping at the first sure one
        (faster-whisper's rule, language_detection.py).
        """
        if language is not None:
            return language, 1.0
        if not self._model.is_multilingual:
            return "en", 1.0
        return first_sure_or_most_often(self._window_tops(speech), self.language_detection.threshold)

    def _window_tops(self, speech: np.ndarray):
        """Lazily, each 30 s window's most probable language and its probability.

        Windows are cut from the audio as faster-whisper cuts its features:
        back to back from the start, the last one (possibly short) padded.
        """
        window = whisper.audio.N_SAMPLES  # 30 s at 16 kHz
        dtype = next(self._model.parameters()).dtype
        for start in range(0, min(speech.size, self.language_detection.segments * window), window):
            mel = whisper.log_mel_spectrogram(
                whisper.pad_or_trim(torch.from_numpy(speech[start:start + window])), self._model.dims.n_mels
            ).to(self._model.device, dtype=dtype)
            _, probabilities = self._model.detect_language(mel)
            top = max(probabilities, key=probabilities.get)
            yield top, float(probabilities[top])


class _Clock:
    """Times in the decoded (lead-in + speech only) audio → times in the clip."""

    def __init__(self, speech_map: SpeechTimestampsMap, duration: float) -> None:
        self._map = speech_map
        self._duration = duration

    def __call__(self, seconds: float, is_end: bool = False) -> float:
        in_speech = max(float(seconds) - LEAD_IN_SECONDS, 0.0)
        return min(self._map.get_original_time(in_speech, is_end=is_end), self._duration)


def _segment(segment: dict, at: _Clock) -> Segment:
    """openai-whisper's segment dict → ours (text trimmed, times on the clip's clock)."""
    return Segment(
        text=segment["text"].strip(),
        start=at(segment["start"]),
        end=max(at(segment["end"], is_end=True), at(segment["start"])),
        avg_logprob=float(segment["avg_logprob"]),
        no_speech_probability=float(segment["no_speech_prob"]),
        words=tuple(
            Word(w["word"].strip(), at(w["start"]), max(at(w["end"], is_end=True), at(w["start"])),
                 float(w["probability"]))
            for w in segment.get("words", ())
        ),
    )


def _checkpoint(model: str) -> tuple[str, str]:
    """``model`` as ``whisper.load_model`` takes it, and where it comes from (for logs)."""
    path = Path(model).expanduser()
    if path.is_file():
        return str(path.resolve()), "local checkpoint"
    if model in whisper.available_models():
        return model, "by name"
    raise ModelProvisioningError(
        f"ASR_MODEL={model!r} is neither a .pt checkpoint file nor a model openai-whisper "
        f"knows ({', '.join(whisper.available_models())})"
    )


def _load_failure(model: str, origin: str, error: Exception) -> str:
    if origin == "by name":
        return (
            f"{first_line(error)} (fetching {model!r} by name needs internet; without "
            "it set ASR_MODEL to a local .pt checkpoint)"
        )
    return f"{first_line(error)} (checkpoint {model}: not a whisper.load_model checkpoint?)"
