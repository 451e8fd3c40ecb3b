"""Language detection window by window, with real models, for
test_language_detection.py. Runs in the ASR service's virtualenv (it needs
faster-whisper, torch and openai-whisper; the test venv has none of them)::

    .venv/asr/bin/python tests/asr/language_windows.py AUDIO CHECKPOINT MODELS_DIR

and prints one JSON object:

- ``faster_whisper``: with the packaged Whisper base, each 30 s window's top
  language (``tops``, computed as faster-whisper's ``detect_language`` cuts
  its windows), what ``WhisperModel.detect_language`` answers for some
  (segments, threshold) pairs (``library``), and what our
  ``first_sure_or_most_often`` rule answers from ``tops`` for the same pairs
  (``rule``): they must agree, since the openai-whisper engine relies on that
  rule being faster-whisper's; and ``batched``: what the batched path of an
  engine loaded from the service's settings (``BATCHED``: ASR_BATCH_SIZE=2,
  3 windows, threshold 1) detects, with its ``batch_size`` (detection only,
  nothing is decoded).
- ``openai_whisper``: with the small random checkpoint (tests/support/
  tiny_whisper.py), each window's top language by openai-whisper's own
  ``whisper.detect_language`` (``tops``), and what the engine's detection
  answers for the same pairs (``engine``) with the encoder passes it ran
  (``passes``, counted by a forward hook on the encoder).

The speech is the VAD-kept audio, as both engines detect on.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

# (segments, threshold): first window only; stop at a sure window; never sure (vote).
SETTINGS = [(1, 0.5), (1, 1.0), (3, 0.5), (3, 1.0), (4, 1.0), (2, 1.0)]
# The batched engine's settings, as the service reads them from its environment.
# Whole encoder windows (the default, pinned), as the library's calls it is
# compared with: a cut last window (encoder_window.py) moves its probability in
# the third decimal, and what is compared here is which windows are looked at.
BATCHED = {"ASR_BATCH_SIZE": "2", "ASR_LANGUAGE_DETECTION_SEGMENTS": "3",
           "ASR_LANGUAGE_DETECTION_THRESHOLD": "1.0", "ASR_DEVICE": "cpu", "ASR_ENCODER_WINDOW_S": "30"}


def speech_of(path: str) -> np.ndarray:
    from faster_whisper.audio import decode_audio
    from faster_whisper.vad import VadOptions, collect_chunks, get_speech_timestamps

    audio = decode_audio(path)
    chunks, _ = collect_chunks(audio, get_speech_timestamps(audio, VadOptions()))
    return np.concatenate(chunks)


def faster_whisper(speech: np.ndarray, models_dir: Path) -> dict:
    from faster_whisper import WhisperModel
    from faster_whisper.audio import pad_or_trim

    from asr_service.language_detection import first_sure_or_most_often
    from asr_service.model_store import resolve_model

    model = WhisperModel(resolve_model("base", models_dir).model, device="cpu", compute_type="int8")
    # The encoder is deterministic and its passes are the cost here: each
    # window is encoded once, and the library's calls below reuse it (what is
    # compared is how windows are cut and combined, which stays the library's).
    encoded, encode = {}, model.encode

    def encode_once(window):
        key = window.tobytes()
        if key not in encoded:
            encoded[key] = encode(window)
        return encoded[key]

    model.encode = encode_once
    features = model.feature_extractor(speech)
    frames = model.feature_extractor.nb_max_frames  # 3000: one 30 s window
    tops = []
    for start in range(0, min(features.shape[-1], 4 * frames), frames):
        token, probability = model.model.detect_language(
            model.encode(pad_or_trim(features[..., start:start + frames])))[0][0]
        tops.append((token[2:-2], probability))
    library, rule = {}, {}
    for segments, threshold in SETTINGS:
        key = f"{segments},{threshold}"
        language, probability, _ = model.detect_language(
            features=features, language_detection_segments=segments,
            language_detection_threshold=threshold)
        library[key] = (language, probability)
        rule[key] = first_sure_or_most_often(tops[:segments], threshold)
    return {"tops": tops, "library": library, "rule": rule, "batched": batched(speech, models_dir)}


def batched(speech: np.ndarray, models_dir: Path) -> dict:
    from asr_service.config import Settings
    from asr_service.server import load_engine

    os.environ.update(BATCHED, MODELS_DIR=str(models_dir))
    engine = load_engine(Settings())  # as the service loads it
    # What the batched path (_prepare_and_submit) calls on the VAD-kept speech.
    return {"batch_size": engine.batch_size, "detected": engine._detect_language(speech)}


def openai_whisper(speech: np.ndarray, checkpoint: str) -> dict:
    import torch
    import whisper

    from asr_service.engine import EngineConfig
    from asr_service.language_detection import LanguageDetection
    from asr_service.openai_whisper_engine import OpenAIWhisperEngine

    loaded = OpenAIWhisperEngine.load(checkpoint, Path("/nonexistent"), EngineConfig(device="cpu"))
    model = loaded._model
    passes = [0]
    model.encoder.register_forward_hook(lambda *_: passes.__setitem__(0, passes[0] + 1))
    window = whisper.audio.N_SAMPLES
    tops, engine = [], {}
    with torch.inference_mode():
        for start in range(0, min(speech.size, 4 * window), window):
            mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(speech[start:start + window])),
                                              model.dims.n_mels)
            _, probabilities = whisper.detect_language(model, mel)
            top = max(probabilities, key=probabilities.get)
            tops.append((top, float(probabilities[top])))
        for segments, threshold in SETTINGS:
            detecting = OpenAIWhisperEngine(model, loaded.name, loaded.device, loaded.compute_type,
                                            LanguageDetection(segments, threshold))
            passes[0] = 0
            language, probability = detecting._language(speech, None)
            engine[f"{segments},{threshold}"] = {"result": (language, probability), "passes": passes[0]}
    return {"tops": tops, "engine": engine}


def main(audio: str, checkpoint: str, models_dir: str) -> int:
    speech = speech_of(audio)
    report = {
        "speech_seconds": speech.size / 16000,
        "faster_whisper": faster_whisper(speech, Path(models_dir)),
        "openai_whisper": openai_whisper(speech, checkpoint),
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
