"""Language detection beyond the first 30 s window, with real models.

The clip: about 31 s of English speech, then about 35 s of Spanish (espeak-ng).
Whisper base is sure of English in the first 30 s window of speech and of
Spanish in the next two (the third holds a few seconds), so what the service
answers shows which windows it looked at:

- ASR_LANGUAGE_DETECTION_SEGMENTS=1: only the first window → "en";
- ASR_LANGUAGE_DETECTION_THRESHOLD=1 (no window is ever sure enough) and
  3 windows: the language top in most windows → "es". The defaults (4 windows,
  0.5) would say "en", so the two runs show that both settings reach the
  faster-whisper engine of a real service.

Each case is a private service over real gRPC (settings are per process), on
the unbatched path. Requests use beam 1: the text is not what is checked, and
part of the clip is decoded in the "wrong" language, which is the slow part
(the clip is kept just long enough for three windows for that reason).

The batched path (ASR_BATCH_SIZE > 1) detects by its own code
(``FasterWhisperEngine._detect_language``); it is checked without decoding,
in the ASR venv (tests/asr/language_windows.py): an engine loaded from the
same settings with ASR_BATCH_SIZE=2 answers what faster-whisper's own
``detect_language`` answers for 3 windows, threshold 1.

The openai-whisper engine has no real checkpoint here (DESIGN §4); its
random tiny model says "ne" for every window, so the service could not tell
its windows apart by the language. It is checked at unit level instead, in
the same run of language_windows.py: the probability it reports is
the one of the window(s) the rule should pick, and the encoder passes show it
stops at the first sure window. The same run checks that our rule for
combining windows gives what faster-whisper's own ``detect_language`` gives
with the real base model, which is what the openai-whisper engine relies on.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from chatbot_protos.asr.v1 import asr_pb2

from scripts.stack import StackConfig
from tests.support import audio_clips as clips
from tests.support.services import asr_stub, start_service
from tests.support.tiny_whisper import ASR_PYTHON, REPO, build_in_asr_venv

TIMEOUT = 300  # seconds: generous; a run takes well under a minute on 2 cores, but they may be busy

ENGLISH = [
    "Hello, how are you today? I would like a cup of coffee.",
    "The weather is very nice this morning.",
    "We are going to the park after lunch.",
    "My brother works at the hospital in the city.",
    "Please send me the report before Friday.",
    "The children are playing football in the garden.",
]
SPANISH = [
    "Buenos días. Quiero saber el tiempo de mañana en Madrid, por favor.",
    "Quiero reservar una mesa para dos personas.",
    "La reunión empieza a las diez de la mañana.",
    "Aprender un idioma nuevo requiere paciencia.",
    "El café está demasiado caliente.",
    "Los niños juegan en el parque.",
    "Vamos a la playa este fin de semana.",
    "Necesito comprar pan y leche en el mercado.",
]
# English fills the first 30 s window of speech with a second to spare (the VAD
# trims a little); Spanish fills the second window and a few seconds of the
# third. More Spanish only costs decoding: with 45 s of it, temperature
# fallback made one transcription about 3x slower.
ENGLISH_SECONDS, SPANISH_SECONDS = 31.0, 33.0

# "Never sure": faster-whisper stops only at a probability strictly above it.
NEVER_SURE = "1.0"


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """The English-then-Spanish clip as webm/opus bytes, and its path on disk."""
    english, rate = clips.speech_lasting(ENGLISH, ENGLISH_SECONDS, voice="en")
    spanish, spanish_rate = clips.speech_lasting(SPANISH, SPANISH_SECONDS, voice="es")
    assert rate == spanish_rate  # espeak-ng speaks every voice at 22.05 kHz
    audio = clips.encode(np.concatenate([english, spanish]), rate, "webm")
    path = tmp_path_factory.mktemp("two-languages") / "english-then-spanish.webm"
    path.write_bytes(audio)
    return audio, path


def detected(tmp_path_factory, audio: bytes, env: dict[str, str]) -> asr_pb2.TranscribeResponse:
    """What a private service with ``env`` detects in ``audio`` (language left empty)."""
    # One CTranslate2 thread: when the 2 cores are busy with other work, two
    # threads wait on each other (measured under load 4: 65-83 s with 2, 30 s
    # with 1); on idle cores it costs a few seconds.
    env = {"ASR_DEVICE": "cpu", "ASR_CPU_THREADS": "1", **env}
    with asr_stub(tmp_path_factory.mktemp("detecting-asr"), env) as (_, stub):
        request = asr_pb2.TranscribeRequest(
            audio=audio, options=asr_pb2.TranscriptionOptions(language="", beam_size=1))
        return stub.Transcribe(request, timeout=TIMEOUT)


# --- faster-whisper, through the service -------------------------------------


def test_the_first_window_alone_says_english(tmp_path_factory, clip):
    reply = detected(tmp_path_factory, clip[0], {
        "ASR_BATCH_SIZE": "1", "ASR_LANGUAGE_DETECTION_SEGMENTS": "1",
        "ASR_LANGUAGE_DETECTION_THRESHOLD": NEVER_SURE})
    assert reply.language == "en"
    assert 0.5 < reply.language_probability < 1.0  # detected, and of English


def test_an_unsure_first_window_is_outvoted_by_the_next_ones(tmp_path_factory, clip):
    reply = detected(tmp_path_factory, clip[0], {
        "ASR_BATCH_SIZE": "1", "ASR_LANGUAGE_DETECTION_SEGMENTS": "3",
        "ASR_LANGUAGE_DETECTION_THRESHOLD": NEVER_SURE})
    assert reply.language == "es"
    # The probability of Spanish in a window where it was top, not English's.
    assert 0.5 < reply.language_probability < 1.0
    assert "madrid" in reply.text.lower()  # and the clip was decoded as Spanish


# --- window by window, in the ASR venv (both engines) ------------------------


@pytest.fixture(scope="module")
def windows(tmp_path_factory, clip) -> dict:
    checkpoint = build_in_asr_venv(tmp_path_factory.mktemp("tiny-whisper") / "tiny-random.pt")
    done = subprocess.run(
        [str(ASR_PYTHON), str(REPO / "tests" / "asr" / "language_windows.py"),
         str(clip[1]), str(checkpoint), str(StackConfig().models_dir)],
        check=True, capture_output=True, text=True, timeout=TIMEOUT)
    return json.loads(done.stdout)


def test_base_hears_english_then_spanish_window_by_window(windows):
    # The premise of the service tests above.
    assert [language for language, _ in windows["faster_whisper"]["tops"]] == ["en", "es", "es"]


def test_our_rule_is_faster_whisper_s_rule(windows):
    # Sure first window (threshold 0.5), a 1-1 tie (2 windows: the first top
    # wins), a 1-2 vote (3 and 4 windows; only 3 exist): the same answers.
    found = windows["faster_whisper"]
    assert found["rule"] == found["library"]
    assert found["library"]["3,0.5"][0] == "en" and found["library"]["2,1.0"][0] == "en"
    assert found["library"]["3,1.0"][0] == "es"


def test_the_batched_path_detects_with_the_same_settings(windows):
    # An engine loaded from ASR_BATCH_SIZE=2, ASR_LANGUAGE_DETECTION_SEGMENTS=3
    # and _THRESHOLD=1 batches, and its detection votes over the 3 windows as
    # faster-whisper's own does (its defaults, or 1 or 2 windows, say "en").
    batched = windows["faster_whisper"]["batched"]
    assert batched["batch_size"] == 2
    language, probability = batched["detected"]
    assert language == "es"
    assert probability == pytest.approx(windows["faster_whisper"]["library"]["3,1.0"][1], abs=1e-3)


def test_openai_whisper_engine_looks_at_further_windows_only_when_unsure(windows):
    tops = windows["openai_whisper"]["tops"]
    engine = windows["openai_whisper"]["engine"]
    assert len(tops) == 3
    # The random model's probabilities differ by window, so they tell which
    # window(s) an answer came from.
    assert len({probability for _, probability in tops}) == 3
    first = tops[0]
    for key in ("1,0.5", "1,1.0", "3,0.5"):  # one window allowed, or the first is sure
        assert engine[key]["result"] == pytest.approx(first) and engine[key]["passes"] == 1, key
    for key, looked_at in (("2,1.0", 2), ("3,1.0", 3), ("4,1.0", 3)):  # never sure: vote
        language, probability = engine[key]["result"]
        votes = [p for top, p in tops[:looked_at] if top == language]
        assert len(votes) * 2 >= looked_at, key  # the most frequent top language
        assert probability == pytest.approx(max(votes)), key  # its best window's probability
        assert engine[key]["passes"] == looked_at, key


# --- settings ------------------------------------------------------------------


@pytest.mark.parametrize("name, value", [("ASR_LANGUAGE_DETECTION_SEGMENTS", "0"),
                                         ("ASR_LANGUAGE_DETECTION_THRESHOLD", "1.5")])
def test_a_nonsensical_detection_setting_stops_the_service_naming_it(tmp_path, name, value):
    service = start_service("asr", tmp_path, {"ASR_PORT": "0", name: value})
    try:
        code = service.process.wait(timeout=60)
    finally:
        service.stop()
    log = service.log_path.read_text()
    assert code == 2, log  # invalid configuration: nothing was loaded
    assert name in log
