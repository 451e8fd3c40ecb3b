"""ASR_ENGINE=openai-whisper, black box over real gRPC.

No Whisper .pt checkpoint ships in any package (DESIGN §4), so the service is
given a small randomly initialised one, built from openai-whisper's own
``ModelDimensions`` with the real multilingual vocabulary and mel size and
saved in the format ``whisper.load_model`` reads (tests/support/tiny_whisper.py).
Its text is meaningless; these tests prove that the engine loads a checkpoint
file, decodes real browser audio through the service (segments, language,
times), honours the options, keeps silence silent and maps errors the same
way as the default engine.
"""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest
from chatbot_protos.asr.v1 import asr_pb2

from tests.support import audio_clips as clips
from tests.support.services import asr_stub, start_service
from tests.support.tiny_whisper import build_in_asr_venv

SENTENCE = "Hola, quiero saber el tiempo de mañana"
TIMEOUT = 180
MAX_SECONDS = 20


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return build_in_asr_venv(tmp_path_factory.mktemp("tiny-whisper") / "tiny-random.pt")


@pytest.fixture(scope="module")
def stub(tmp_path_factory, checkpoint):
    env = {"ASR_ENGINE": "openai-whisper", "ASR_MODEL": str(checkpoint),
           "ASR_MAX_AUDIO_SECONDS": str(MAX_SECONDS)}
    with asr_stub(tmp_path_factory.mktemp("openai-whisper-asr"), env) as (_, stub):
        yield stub


@pytest.fixture(scope="module")
def sentence():
    return clips.wav_to_samples(clips.speak_wav(SENTENCE))


def transcribe(stub, audio: bytes, **options) -> asr_pb2.TranscribeResponse:
    request = asr_pb2.TranscribeRequest(audio=audio, options=asr_pb2.TranscriptionOptions(**options))
    return stub.Transcribe(request, timeout=TIMEOUT)


def refusal(stub, audio: bytes, **options) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        transcribe(stub, audio, **options)
    return info.value


def error_type(error: grpc.RpcError) -> str:
    return dict(error.trailing_metadata() or ()).get("error-type", "")


# --- loading and description -------------------------------------------------


def test_list_models_describes_the_checkpoint_on_the_pytorch_engine(stub, checkpoint):
    info = stub.ListModels(asr_pb2.ListModelsRequest(), timeout=10).models[0]
    assert info.engine == "openai-whisper"
    assert info.name == str(checkpoint)
    assert info.loaded is True
    assert info.device == "cpu"
    assert info.compute_type == "float32"  # "auto" on a CPU: PyTorch has no fast fp16 there
    assert info.default_language == "es"
    assert len(info.languages) == 100 and "es" in info.languages  # multilingual vocabulary


# --- transcription -----------------------------------------------------------


@pytest.mark.parametrize("fmt", ["webm", "mp4"])
def test_real_audio_is_decoded_into_segments_with_a_language(stub, sentence, checkpoint, fmt):
    samples, rate = sentence
    reply = transcribe(stub, clips.encode(samples, rate, fmt))

    assert reply.text  # meaningless words, but words
    assert reply.segments
    assert " ".join(s.text for s in reply.segments) == reply.text
    for segment in reply.segments:
        assert 0.0 <= segment.start_seconds <= segment.end_seconds <= reply.duration_seconds + 0.05
    assert reply.language == "es" and reply.language_probability == pytest.approx(1.0)
    assert reply.duration_seconds == pytest.approx(len(samples) / rate, abs=0.15)
    assert reply.model == str(checkpoint)


def test_empty_language_is_detected_with_a_probability(stub, sentence):
    reply = transcribe(stub, clips.encode(*sentence, "ogg"), language="")
    info = stub.ListModels(asr_pb2.ListModelsRequest(), timeout=10).models[0]
    assert reply.language in info.languages
    assert 0.0 < reply.language_probability <= 1.0
    assert reply.segments


def test_given_language_and_translate_task_are_used(stub, sentence):
    audio = clips.encode(*sentence, "webm")
    english = transcribe(stub, audio, language="en")
    assert english.language == "en" and english.segments

    translated = transcribe(stub, audio, task=asr_pb2.TASK_TRANSLATE)
    assert translated.language == "es" and translated.segments


def test_beam_size_prompt_and_word_timestamps_are_honoured(stub, sentence):
    audio = clips.encode(*sentence, "webm")
    plain = transcribe(stub, audio, beam_size=1)
    assert all(not s.words for s in plain.segments)

    # A prompt becomes decoder context: even a random model then writes other text.
    prompted = transcribe(stub, audio, beam_size=1, initial_prompt="Hola Madrid")
    assert prompted.segments and prompted.text != plain.text

    with_words = transcribe(stub, audio, beam_size=5, word_timestamps=True)
    words = [w for s in with_words.segments for w in s.words]
    assert words, with_words
    for segment in with_words.segments:
        for word in segment.words:
            assert segment.start_seconds - 0.01 <= word.start_seconds <= word.end_seconds
            assert word.end_seconds <= segment.end_seconds + 0.01


def test_silence_gives_no_text_because_vad_runs_first(stub):
    # A random decoder writes text for anything it is given; an empty answer
    # proves the Silero VAD in front of it dropped the hiss.
    reply = transcribe(stub, clips.encode(*clips.silence(5.0), "webm"))
    assert reply.text == "" and list(reply.segments) == []
    assert reply.duration_seconds == pytest.approx(5.0, abs=0.1)


def test_streaming_transcription_runs_on_this_engine_too(stub, sentence):
    webm = clips.encode(*sentence, "webm")
    config = asr_pb2.StreamingTranscribeRequest(config=asr_pb2.StreamingConfig(mime_type="audio/webm"))
    chunks = [asr_pb2.StreamingTranscribeRequest(audio_chunk=webm[i:i + 4096])
              for i in range(0, len(webm), 4096)]
    results = list(stub.StreamingTranscribe(iter([config, *chunks]), timeout=TIMEOUT))
    finals = [r for r in results if r.is_final]
    assert len(finals) == 1 and finals[0].text and finals[0].language == "es"


# --- errors: the same table as the default engine ----------------------------


def test_errors_map_to_the_same_statuses_and_types(stub, sentence):
    webm = clips.encode(*sentence, "webm")
    cases = [
        (dict(audio=webm, language="klingon"), "invalid_options", "unknown language"),
        (dict(audio=webm, beam_size=17), "invalid_options", "beam_size must be between 1 and 16"),
        (dict(audio=b"not audio at all" * 64), "invalid_audio", "not a recognised audio format"),
        (dict(audio=clips.encode(*clips.silence(MAX_SECONDS + 5.0), "webm")), "audio_too_long",
         "ASR_MAX_AUDIO_SECONDS"),
    ]
    for kwargs, expected_type, expected_text in cases:
        error = refusal(stub, kwargs.pop("audio"), **kwargs)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
        assert error_type(error) == expected_type
        assert expected_text in error.details()


# --- start-up failures: exit with one line that says what to do --------------


def exit_of(tmp_path: Path, env: dict[str, str]) -> tuple[int, str]:
    service = start_service("asr", tmp_path, {"ASR_PORT": "0", **env})
    try:
        code = service.process.wait(timeout=120)
    finally:
        service.stop()
    return code, service.log_path.read_text()


def test_a_file_that_is_not_a_checkpoint_stops_the_service(tmp_path):
    bogus = tmp_path / "not-a-model.pt"
    bogus.write_bytes(b"these are not weights")
    code, log = exit_of(tmp_path, {"ASR_ENGINE": "openai-whisper", "ASR_MODEL": str(bogus)})
    assert code == 1, log
    assert "not a whisper.load_model checkpoint" in log


def test_an_unknown_model_name_stops_the_service_naming_the_choices(tmp_path):
    code, log = exit_of(tmp_path, {"ASR_ENGINE": "openai-whisper", "ASR_MODEL": "huge-v9"})
    assert code == 1, log
    assert "neither a .pt checkpoint file nor a model openai-whisper knows" in log
    assert "large-v3" in log


def test_int8_is_refused_at_start_with_the_pytorch_engine(tmp_path):
    started = time.monotonic()
    code, log = exit_of(tmp_path, {"ASR_ENGINE": "openai-whisper", "ASR_COMPUTE_TYPE": "int8"})
    assert code == 2, log  # invalid configuration: nothing was loaded
    assert "ASR_COMPUTE_TYPE=int8 is not available with ASR_ENGINE=openai-whisper" in log
    assert time.monotonic() - started < 60
