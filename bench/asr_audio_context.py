"""Would a shorter encoder window make short prompts faster without losing words? (a table; not a test)

On these CPUs most of a short clip's time is Whisper's encoder, which always
processes a 30 s window, speech plus padding (../shared/DESIGN.md, "Where ASR
time goes"). whisper.cpp's ``audio_ctx`` idea is to encode only as much of the
window as the clip needs. asr-service does this on CPUs
(asr-service/asr_service/encoder_window.py): the window is the smallest
multiple of a step that holds the speech plus 5 s. This bench runs the
service's engine with the whole window and with a few steps, and prints speed
and words against the whole window on:

- the 22 Spanish espeak-ng sentences of the latency bench (WER against the text
  espeak said), and
- real speech: the 60 s English talk that silero-vad's tests use (its sdist from
  PyPI, MIT; fetched once into .cache/bench-audio), cut into 4 s pieces, as
  voice prompts are short. No transcript ships with it, so the full window's
  words are the reference: "changed" counts word edits against them, "loops"
  counts pieces where a phrase repeats three times or more, Whisper's known
  failure on too little context.

Results: bench/results/asr_audio_context_cpu_*.txt. The rule is the service's own
(its step is what ASR_ENCODER_WINDOW_S sets).

    .venv/asr/bin/python bench/asr_audio_context.py [--steps 15,10] [--piece-s 4]
    .venv/asr/bin/python bench/asr_audio_context.py --interim   # live dictation's interim pass only
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from asr_service.encoder_window import TAIL_FRAMES, WHOLE_WINDOW_S, short_window_model_class  # noqa: E402
from asr_service.engine import TranscribeOptions  # noqa: E402
from asr_service.faster_whisper_engine import FasterWhisperEngine  # noqa: E402

from tests.support.spanish_speech import SENTENCES, normalise, word_errors  # noqa: E402
from tests.support import audio_clips as clips  # noqa: E402

MODEL = REPO / ".cache" / "models" / "faster-whisper-base"
AUDIO_CACHE = REPO / ".cache" / "bench-audio"
REAL_SPEECH_SDIST = "silero-vad==6.2.3"
REAL_SPEECH_MEMBER = "silero_vad-6.2.3/tests/data/test.wav"


def real_speech_pieces(seconds: float) -> list[np.ndarray]:
    """The real-speech recording as 16 kHz float pieces of ``seconds``."""
    from faster_whisper.audio import decode_audio

    wav = AUDIO_CACHE / "silero-vad-test.wav"
    if not wav.exists():
        AUDIO_CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                        "--dest", str(AUDIO_CACHE), REAL_SPEECH_SDIST], check=True)
        sdist = next(AUDIO_CACHE.glob("silero_vad-*.tar.gz"))
        with tarfile.open(sdist) as archive:
            wav.write_bytes(archive.extractfile(REAL_SPEECH_MEMBER).read())
    samples = decode_audio(str(wav), sampling_rate=16000)
    size = int(seconds * 16000)
    return [samples[start:start + size] for start in range(0, len(samples) - size + 1, size)]


def loops(text: str) -> bool:
    """A word or two-word phrase said three times in a row: Whisper stuck repeating."""
    words = normalise(text)
    for width in (1, 2):
        for start in range(len(words) - 3 * width + 1):
            phrase = words[start:start + width]
            if words[start + width:start + 2 * width] == phrase == words[start + 2 * width:start + 3 * width]:
                return True
    return False


def transcribe(engine, audio: np.ndarray, language: str) -> tuple[str, float]:
    """asr-service's own transcription (lead-in, VAD, beam 5, fallback) of ``audio``."""
    started = time.perf_counter()
    text = engine.transcribe(audio, TranscribeOptions(language=language)).text
    return text, time.perf_counter() - started


def interim_passes(engine, audio: np.ndarray, runs: int = 12) -> None:
    """Live dictation's interim pass (greedy, no fallback) over 1.5 s of speech,
    whole window against the 15 s one it uses (streaming.py), alternated."""
    import statistics

    from asr_service.streaming import INTERIM_WINDOW_S

    seconds: dict[int, list[float]] = {WHOLE_WINDOW_S: [], INTERIM_WINDOW_S: []}
    for run in range(runs):
        for step in sorted(seconds, reverse=bool(run % 2)):
            options = TranscribeOptions(language="es", beam_size=1, temperature_fallback=False,
                                        batchable=False, encoder_window_s=step)
            started = time.perf_counter()
            engine.transcribe(audio[:24_000], options)
            seconds[step].append(time.perf_counter() - started)
    print(f"live-dictation interim pass over 1.5 s of speech, median of {runs}: "
          + ", ".join(f"{step} s window {statistics.median(values):.3f} s" for step, values in seconds.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="15,10", help="encoder window steps to try, seconds (30 always runs)")
    parser.add_argument("--piece-s", type=float, default=4.0, help="length of the real-speech pieces")
    parser.add_argument("--interim", action="store_true", help="only time live dictation's interim pass")
    args = parser.parse_args(argv)
    # The full window comes first: its words are the real speech's reference.
    steps = [WHOLE_WINDOW_S] + [int(value) for value in args.steps.split(",") if int(value) != WHOLE_WINDOW_S]

    from faster_whisper.audio import decode_audio

    model = short_window_model_class()(str(MODEL), device="cpu", compute_type="int8", cpu_threads=2)
    engine = FasterWhisperEngine(model, "base", "cpu", "int8")
    spanish = [decode_audio(io.BytesIO(clips.speak_wav(sentence)), sampling_rate=16000) for sentence in SENTENCES]
    if args.interim:
        interim_passes(engine, spanish[0])
        return 0
    pieces = real_speech_pieces(args.piece_s)
    transcribe(engine, spanish[0], "es")  # warm-up

    print(f"asr-service's faster-whisper engine, Whisper base int8, 2 threads (beam 5, VAD, 0.5 s lead-in); "
          f"encoder window = smallest multiple of the step holding speech + {TAIL_FRAMES // 100} s\n"
          f"{'step s':>7}  {'es s/clip':>9} {'es WER':>7}  {'en s/piece':>10} {'changed':>8} {'loops':>6}")
    full_window_words: list[str] = []
    for step in steps:
        model.step_s = step
        errors = words = 0
        spent = 0.0
        for sentence, audio in zip(SENTENCES, spanish):
            text, seconds = transcribe(engine, audio, "es")
            wrong, said = word_errors(sentence, text)
            errors, words, spent = errors + wrong, words + said, spent + seconds
        heard = [transcribe(engine, piece, "en") for piece in pieces]
        if not full_window_words:
            full_window_words = [text for text, _ in heard]
        changed = sum(word_errors(reference, text)[0] for reference, (text, _) in zip(full_window_words, heard))
        reference_words = sum(word_errors(reference, "")[1] for reference in full_window_words)
        print(f"{step:>6}   {spent / len(spanish):>9.3f} {100 * errors / words:>6.1f}%  "
              f"{sum(s for _, s in heard) / len(pieces):>10.3f} {100 * changed / reference_words:>7.1f}% "
              f"{sum(loops(text) for text, _ in heard):>3}/{len(pieces)}", flush=True)
        for reference, (text, _) in zip(full_window_words, heard):
            if step != WHOLE_WINDOW_S and word_errors(reference, text)[0]:
                print(f"          30 s: {reference!r}\n          {step:>2} s: {text!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
