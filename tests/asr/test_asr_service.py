"""asr-service, black box: real gRPC over a real socket to a running service.

The shared session fixture ``asr_addr`` (tests/conftest.py) is a started,
SERVING asr-service with the default settings (Whisper base, language es).
A second, private service with a tiny queue and a short length limit covers
the load-shedding and length rules. Speech comes from espeak-ng, re-encoded to
each browser's container by ``clips``.
"""

from __future__ import annotations

import os
import random
import threading
import unicodedata
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from chatbot_protos.asr.v1 import asr_pb2, asr_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from tests.support import audio_clips as clips
from tests.support.services import asr_stub

SERVICE_NAME = asr_pb2.DESCRIPTOR.services_by_name["Transcription"].full_name

MIB = 1024 * 1024
MAX_UPLOAD_MB = int(os.environ.get("MAX_UPLOAD_MB", "25"))
SENTENCE = "Hola, quiero saber el tiempo de mañana"
LONGER = "Buenos días. Quiero saber el tiempo de mañana en Madrid, por favor."
TIMEOUT = 120  # seconds; generous for a loaded 2-core CI machine


def plain(text: str) -> str:
    """Lowercase without accents, so assertions survive Whisper's spelling choices."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


# --- fixtures ----------------------------------------------------------------


@pytest.fixture(scope="module")
def channel(asr_addr):
    # The client must be allowed to send what the server accepts, or the
    # oversized test would be refused by the client library, not the service.
    limit = (MAX_UPLOAD_MB + 2) * MIB
    with grpc.insecure_channel(
        asr_addr,
        options=[("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)],
    ) as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(channel):
    return asr_pb2_grpc.TranscriptionStub(channel)


@pytest.fixture(scope="module")
def sentence_samples():
    return clips.wav_to_samples(clips.speak_wav(SENTENCE))


@pytest.fixture(scope="module")
def longer_samples():
    return clips.wav_to_samples(clips.speak_wav(LONGER))


def transcribe(stub, audio: bytes, mime_type: str = "", **options) -> asr_pb2.TranscribeResponse:
    request = asr_pb2.TranscribeRequest(
        audio=audio, mime_type=mime_type, options=asr_pb2.TranscriptionOptions(**options)
    )
    return stub.Transcribe(request, timeout=TIMEOUT)


def refusal(stub, audio: bytes, **options) -> grpc.RpcError:
    """Send a request that must fail; return its error."""
    with pytest.raises(grpc.RpcError) as info:
        transcribe(stub, audio, **options)
    return info.value


BAD_INPUTS = {
    "empty": (b"", "audio is empty"),
    # Seeded, so the "random" bytes are the same on every run (no flaky probe luck).
    "random-bytes": (random.Random(7).randbytes(4096), "not a recognised audio format"),
    "png-image": (clips.png_bytes(), "no audio stream found"),
}


def bad_input(name: str, sentence_samples) -> tuple[bytes, str]:
    if name == "webm-cut-inside-header":
        webm = clips.encode(*sentence_samples, "webm")
        return webm[:150], "truncated"
    return BAD_INPUTS[name]


# --- health and discovery ----------------------------------------------------


@pytest.mark.parametrize("service", ["", SERVICE_NAME])
def test_health_reports_serving(channel, service):
    reply = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=10
    )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_and_describes_the_transcription_service(channel):
    database = ProtoReflectionDescriptorDatabase(channel)
    assert SERVICE_NAME in database.get_services()
    file = database.FindFileContainingSymbol(SERVICE_NAME)
    assert "Transcribe" in str(file)  # grpcurl can describe it with no .proto at hand


# --- transcription -----------------------------------------------------------


# fmp4: Safari's MediaRecorder (fragmented MP4, no sample index up front).
@pytest.mark.parametrize("fmt", ["webm", "ogg", "mp4", "fmp4", "mp3"])
def test_spanish_speech_is_transcribed_from_each_browser_format(stub, sentence_samples, fmt):
    audio = clips.encode(*sentence_samples, fmt)
    reply = transcribe(stub, audio, clips.CONTAINERS[fmt].mime_type)

    text = plain(reply.text)
    assert "tiempo" in text and "manana" in text, reply.text
    assert reply.language == "es"
    assert reply.language_probability == pytest.approx(1.0)  # given, not detected
    samples, rate = sentence_samples
    assert reply.duration_seconds == pytest.approx(len(samples) / rate, abs=0.15)
    assert reply.model
    assert 0 < reply.processing_seconds < TIMEOUT


def test_segments_and_words_have_increasing_times_within_the_clip(stub, longer_samples):
    reply = transcribe(stub, clips.encode(*longer_samples, "webm"), word_timestamps=True)

    assert reply.segments, reply
    assert " ".join(s.text for s in reply.segments) == reply.text
    previous_end = 0.0
    for segment in reply.segments:
        assert previous_end <= segment.start_seconds + 0.01
        assert segment.start_seconds < segment.end_seconds <= reply.duration_seconds + 0.05
        assert segment.words, "word_timestamps=True must return words"
        for word in segment.words:
            assert segment.start_seconds - 0.01 <= word.start_seconds <= word.end_seconds
            assert word.end_seconds <= segment.end_seconds + 0.01
        previous_end = segment.end_seconds
    assert "madrid" in plain(reply.text)


def test_silence_gives_empty_text_not_invented_words(stub):
    reply = transcribe(stub, clips.encode(*clips.silence(10.0), "webm"))
    assert reply.text == ""
    assert list(reply.segments) == []
    assert reply.duration_seconds == pytest.approx(10.0, abs=0.1)


def test_explicit_empty_language_asks_for_detection(stub, longer_samples):
    reply = transcribe(stub, clips.encode(*longer_samples, "ogg"), language="")
    # A detected language comes with a probability below 1 (given ones get 1.0).
    assert reply.language
    assert 0.0 < reply.language_probability < 1.0


# --- bad input ---------------------------------------------------------------


@pytest.mark.parametrize("name", [*BAD_INPUTS, "webm-cut-inside-header"])
def test_bad_audio_is_invalid_argument_saying_what_is_wrong(stub, sentence_samples, name):
    audio, expected = bad_input(name, sentence_samples)
    error = refusal(stub, audio)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    assert expected in error.details()


def test_unknown_language_is_invalid_argument(stub, sentence_samples):
    error = refusal(stub, clips.encode(*sentence_samples, "webm"), language="klingon")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown language" in error.details()


def test_oversized_audio_is_refused_by_the_service_not_by_grpc_limits(stub):
    audio = b"\0" * (MAX_UPLOAD_MB * MIB + 1)
    error = refusal(stub, audio)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert "too large" in error.details() and f"{MAX_UPLOAD_MB} MiB" in error.details()
    assert ("error-type", "audio_too_large") in tuple(error.trailing_metadata() or ())


def test_service_still_transcribes_after_bad_input(stub, sentence_samples):
    for name in [*BAD_INPUTS, "webm-cut-inside-header"]:
        refusal(stub, bad_input(name, sentence_samples)[0])
    reply = transcribe(stub, clips.encode(*sentence_samples, "webm"))
    assert "tiempo" in plain(reply.text)


# --- limits (a private service with a one-slot queue and a 5 s limit) --------


@pytest.fixture(scope="module")
def strict_stub(tmp_path_factory):
    env = {"ASR_WORKERS": "1", "ASR_MAX_QUEUE": "0", "ASR_MAX_AUDIO_SECONDS": "5"}
    with asr_stub(tmp_path_factory.mktemp("strict-asr"), env, timeout=120) as (_, stub):
        yield stub


def test_audio_longer_than_the_limit_is_invalid_argument(strict_stub):
    error = refusal(strict_stub, clips.encode(*clips.silence(8.0), "webm"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "too long" in error.details() and "ASR_MAX_AUDIO_SECONDS" in error.details()


def test_full_queue_refuses_with_resource_exhausted_and_recovers(strict_stub, longer_samples):
    audio = clips.encode(*longer_samples, "webm")
    # Three calls released together at one worker with no queue: one is taken,
    # the others find it busy (no sleep guessing when the first has started).
    together = threading.Barrier(3)

    def call() -> object:
        together.wait()
        try:
            return transcribe(strict_stub, audio)
        except grpc.RpcError as error:  # returned, not lost in the thread
            return error

    with ThreadPoolExecutor(3) as pool:
        outcomes = list(pool.map(lambda _: call(), range(3)))
    refused = [o for o in outcomes if isinstance(o, grpc.RpcError)]
    answered = [o for o in outcomes if not isinstance(o, grpc.RpcError)]
    assert refused and answered, outcomes
    for error in refused:
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
        assert "busy" in error.details()
    assert all("madrid" in plain(reply.text) for reply in answered)
    # The slot is free again once the first call is done.
    assert "madrid" in plain(transcribe(strict_stub, audio).text)
