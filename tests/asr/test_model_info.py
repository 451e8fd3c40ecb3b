"""ListModels, black box over real gRPC: what a client learns about the model.

A private asr-service (faster-whisper, the packaged base model) with a
non-default language, so the answer is seen to come from the settings and
the loaded model rather than from constants. The openai-whisper engine's
answer is checked in test_openai_whisper.py.
"""

from __future__ import annotations

import grpc
import pytest
from chatbot_protos.asr.v1 import asr_pb2

from tests.support import audio_clips as clips
from tests.support.services import asr_stub

# The language tokens of Whisper's multilingual vocabulary: 99, plus Cantonese
# ("yue", added with large-v3), which both engines list for every
# multilingual model.
WHISPER_LANGUAGES = 100


@pytest.fixture(scope="module")
def stub(tmp_path_factory):
    env = {"ASR_LANGUAGE": "en", "ASR_DEVICE": "cpu"}
    with asr_stub(tmp_path_factory.mktemp("model-info-asr"), env) as (_, stub):
        yield stub


def test_list_models_describes_the_loaded_faster_whisper_model(stub):
    reply = stub.ListModels(asr_pb2.ListModelsRequest(), timeout=10)

    assert len(reply.models) == 1
    info = reply.models[0]
    assert info.name == "base"
    assert info.engine == "faster-whisper"
    assert info.loaded is True
    assert info.device == "cpu"
    assert info.compute_type == "int8"  # "auto" resolved for the CPU
    assert info.default_language == "en"  # ASR_LANGUAGE, not the built-in "es"
    languages = list(info.languages)
    assert languages == sorted(languages)
    assert len(languages) == WHISPER_LANGUAGES
    assert {"es", "en", "fr", "de", "pt"} <= set(languages)


def test_listed_languages_are_accepted_and_unlisted_ones_refused(stub):
    # The list is the one the service checks requests against, not a copy.
    info = stub.ListModels(asr_pb2.ListModelsRequest(), timeout=10).models[0]
    quiet = clips.encode(*clips.silence(1.0), "webm")
    for language in (info.languages[0], info.languages[-1]):
        reply = stub.Transcribe(asr_pb2.TranscribeRequest(
            audio=quiet, options=asr_pb2.TranscriptionOptions(language=language)), timeout=60)
        assert reply.language == language

    assert "xx" not in info.languages
    with pytest.raises(grpc.RpcError) as refused:
        stub.Transcribe(asr_pb2.TranscribeRequest(
            audio=quiet, options=asr_pb2.TranscriptionOptions(language="xx")), timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown language" in refused.value.details()


def test_list_models_names_the_model_that_transcripts_report(stub):
    info = stub.ListModels(asr_pb2.ListModelsRequest(), timeout=10).models[0]
    reply = stub.Transcribe(
        asr_pb2.TranscribeRequest(audio=clips.speech("Hello, how are you?", "webm", voice="en")),
        timeout=120,
    )
    assert reply.model == info.name
    assert reply.language == info.default_language
    assert "how are you" in reply.text.lower()
