"""The encoder windows an engine loaded from the service's settings really runs,
for test_encoder_window.py. Runs in the ASR service's virtualenv (it needs
faster-whisper; the test venv has none)::

    ASR_ENCODER_WINDOW_S=… .venv/asr/bin/python tests/asr/encoder_windows.py AUDIO [AUDIO …]

Loads the engine as the service does (``server.load_engine(Settings())``, so
the environment decides), counts the frames of every encoder pass by wrapping
faster-whisper's own ``WhisperModel.encode`` (what the service's subclass hands
its cut window to), transcribes each file in Spanish and prints one JSON
object: ``step`` (the engine's resolved window step), per file its ``text``
and the ``frames`` of each encoder pass (``runs``), and the passes of live
dictation over the first file (``dictation``: an interim step, then the final).
"""

from __future__ import annotations

import json
import sys

from asr_service.engine import TranscribeOptions


def dictation(engine, samples, passes: list[int]) -> list[dict]:
    """Live dictation's two kinds of pass over the first file: its first 1.5 s
    while the speaker goes on (an interim), then all of it once the stream ends
    (the final). Each step's results with the frames of its encoder passes."""
    from asr_service.streaming import UtteranceTracker

    tracker = UtteranceTracker(engine, TranscribeOptions(language="es"))
    steps = []
    for samples_so_far, ended in ((samples[:24_000], False), (samples, True)):
        passes.clear()
        results = tracker.process(samples_so_far, ended)
        steps.append({"finals": [r.is_final for r in results], "frames": list(passes)})
    return steps


def main(paths: list[str]) -> int:
    from faster_whisper import WhisperModel
    from faster_whisper.audio import decode_audio

    from asr_service.config import Settings
    from asr_service.server import load_engine

    passes: list[int] = []
    library_encode = WhisperModel.encode

    def counted_encode(self, features):
        passes.append(int(features.shape[-1]))
        return library_encode(self, features)

    WhisperModel.encode = counted_encode
    engine = load_engine(Settings())
    runs = []
    for path in paths:
        passes.clear()
        transcript = engine.transcribe(decode_audio(path), TranscribeOptions(language="es"))
        runs.append({"text": transcript.text, "frames": list(passes)})
    print(json.dumps({"step": engine.encoder_window_s, "runs": runs,
                      "dictation": dictation(engine, decode_audio(paths[0]), passes)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
