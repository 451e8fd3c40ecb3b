"""StreamingTranscribe, black box over real gRPC: a growing webm stream in,
interim and final results out, as a browser's MediaRecorder would feed it.

A private asr-service (default settings but a 20 s length limit, its own log)
is started for this module, so the cancellation test can read what the
service logged.
"""

from __future__ import annotations

import threading
import time
import unicodedata

import grpc
import numpy as np
import pytest
from chatbot_protos.asr.v1 import asr_pb2

from tests.support import audio_clips as clips
from tests.support.services import asr_stub

LONGER = "Buenos días. Quiero saber el tiempo de mañana en Madrid, por favor."
SECOND = "Gracias. Ahora quiero escuchar música tranquila."
CHUNK = 2048  # bytes; MediaRecorder with a 250 ms timeslice sends about this much
MAX_CHUNK = 16 * 1024
TIMEOUT = 180
MAX_SECONDS = 20


def plain(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    env = {"ASR_MAX_AUDIO_SECONDS": str(MAX_SECONDS)}
    with asr_stub(tmp_path_factory.mktemp("streaming-asr"), env) as (svc, stub):
        yield svc, stub


@pytest.fixture(scope="module")
def stub(service):
    return service[1]


@pytest.fixture(scope="module")
def madrid_webm() -> tuple[bytes, float]:
    samples, rate = clips.wav_to_samples(clips.speak_wav(LONGER))
    return clips.encode(samples, rate, "webm"), len(samples) / rate


@pytest.fixture(scope="module")
def two_utterances_webm() -> bytes:
    first, rate = clips.wav_to_samples(clips.speak_wav(LONGER))
    second, rate2 = clips.wav_to_samples(clips.speak_wav(SECOND))
    assert rate == rate2
    pause, _ = clips.silence(2.0, rate)
    return clips.encode(np.concatenate([first, pause, second]), rate, "webm")


def config_message(language: str | None = None,
                   mime_type: str = "audio/webm;codecs=opus") -> asr_pb2.StreamingTranscribeRequest:
    options = asr_pb2.TranscriptionOptions()
    if language is not None:
        options.language = language
    return asr_pb2.StreamingTranscribeRequest(config=asr_pb2.StreamingConfig(mime_type=mime_type, options=options))


def audio_messages(data: bytes, chunk: int = CHUNK, seconds: float = 0.0):
    """``data`` cut into chunks, spread over ``seconds`` as a live recording is."""
    pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)]
    for piece in pieces:
        if seconds:
            time.sleep(seconds / len(pieces))
        yield asr_pb2.StreamingTranscribeRequest(audio_chunk=piece)


def stream(stub, data: bytes, seconds: float = 0.0, chunk: int = CHUNK,
           mime_type: str = "audio/webm;codecs=opus") -> list[asr_pb2.StreamingTranscribeResponse]:
    requests = _chain(config_message(mime_type=mime_type), audio_messages(data, chunk, seconds))
    return list(stub.StreamingTranscribe(requests, timeout=TIMEOUT))


def _chain(first, rest):
    yield first
    yield from rest


def test_live_stream_gives_interim_results_then_a_final_with_the_words(stub, madrid_webm):
    data, duration = madrid_webm
    replies = stream(stub, data, seconds=duration)  # paced like a live microphone

    interims = [r for r in replies if not r.is_final]
    finals = [r for r in replies if r.is_final]
    assert interims, replies
    assert all(0.0 <= r.stability <= 1.0 for r in interims)
    assert len(finals) == 1, replies
    final = finals[0]
    assert "madrid" in plain(final.text) and "tiempo" in plain(final.text), final
    assert final.language == "es"
    assert final.stability == pytest.approx(1.0)
    assert 0.0 <= final.start_seconds < final.end_seconds <= duration + 0.3
    assert replies[-1].is_final  # interims come before the final they lead to


def test_a_second_utterance_after_a_pause_gets_its_own_final(stub, two_utterances_webm):
    finals = [r for r in stream(stub, two_utterances_webm) if r.is_final]

    assert len(finals) == 2, finals
    assert "madrid" in plain(finals[0].text) and "musica" not in plain(finals[0].text)
    assert "musica" in plain(finals[1].text) and "madrid" not in plain(finals[1].text)
    assert finals[0].end_seconds <= finals[1].start_seconds


def test_firefox_ogg_opus_stream_is_transcribed_too(stub):
    samples, rate = clips.wav_to_samples(clips.speak_wav(LONGER))
    finals = [r for r in stream(stub, clips.encode(samples, rate, "ogg")) if r.is_final]
    assert len(finals) == 1 and "madrid" in plain(finals[0].text), finals


def test_safari_fragmented_mp4_stream_gives_interims_then_the_final(stub):
    # Safari's MediaRecorder: AAC in fragmented MP4, sent fragment by fragment as it records.
    samples, rate = clips.wav_to_samples(clips.speak_wav(LONGER))
    data, duration = clips.encode(samples, rate, "fmp4"), len(samples) / rate
    replies = stream(stub, data, seconds=duration, mime_type="audio/mp4")
    finals = [r for r in replies if r.is_final]
    assert [r for r in replies if not r.is_final], "no interim result while the recording grew"
    assert len(finals) == 1 and "madrid" in plain(finals[0].text), replies
    assert replies[-1].is_final


def test_silence_stream_gives_no_results(stub):
    assert stream(stub, clips.encode(*clips.silence(6.0), "webm")) == []


def test_audio_before_the_config_is_invalid_argument(stub, madrid_webm):
    with pytest.raises(grpc.RpcError) as info:
        list(stub.StreamingTranscribe(audio_messages(madrid_webm[0]), timeout=TIMEOUT))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "first message" in info.value.details() and "config" in info.value.details()


def test_a_chunk_over_16_kib_is_invalid_argument(stub, madrid_webm):
    data = madrid_webm[0]
    assert len(data) > MAX_CHUNK + 1
    requests = [config_message(), asr_pb2.StreamingTranscribeRequest(audio_chunk=data[:MAX_CHUNK + 1])]
    with pytest.raises(grpc.RpcError) as info:
        list(stub.StreamingTranscribe(iter(requests), timeout=TIMEOUT))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "too large" in info.value.details() and "16 KiB" in info.value.details()
    assert ("error-type", "chunk_too_large") in tuple(info.value.trailing_metadata() or ())


def test_a_second_config_is_invalid_argument(stub, madrid_webm):
    requests = [config_message(), asr_pb2.StreamingTranscribeRequest(audio_chunk=madrid_webm[0][:1000]),
                config_message()]
    with pytest.raises(grpc.RpcError) as info:
        list(stub.StreamingTranscribe(iter(requests), timeout=TIMEOUT))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "only once" in info.value.details()


def test_a_stream_longer_than_the_limit_is_refused(stub):
    with pytest.raises(grpc.RpcError) as info:
        stream(stub, clips.encode(*clips.silence(MAX_SECONDS + 5.0), "webm"), chunk=MAX_CHUNK)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "too long" in info.value.details()
    assert ("error-type", "audio_too_long") in tuple(info.value.trailing_metadata() or ())


def test_a_chunk_of_exactly_16_kib_is_accepted(stub, madrid_webm):
    finals = [r for r in stream(stub, madrid_webm[0], chunk=MAX_CHUNK) if r.is_final]
    assert finals and "madrid" in plain(finals[0].text)


def test_a_stream_of_non_audio_bytes_is_invalid_argument(stub):
    junk = bytes(range(256)) * 8
    with pytest.raises(grpc.RpcError) as info:
        stream(stub, junk)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "could not decode audio" in info.value.details()


def test_unknown_language_in_the_config_is_invalid_argument(stub):
    with pytest.raises(grpc.RpcError) as info:
        list(stub.StreamingTranscribe(iter([config_message("klingon")]), timeout=TIMEOUT))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown language" in info.value.details()


def test_client_going_away_stops_the_work(service, madrid_webm):
    svc, stub = service
    data, duration = madrid_webm
    cancelled = threading.Event()

    def requests():
        yield config_message()
        for message in audio_messages(data, CHUNK, seconds=duration):
            if cancelled.is_set():
                return
            yield message

    call = stub.StreamingTranscribe(requests(), timeout=TIMEOUT)
    first = next(call)  # the service is working on the stream
    assert not first.is_final
    call.cancel()
    cancelled.set()

    deadline = time.monotonic() + 30
    while "cancelled by the client" not in svc.log_tail(50) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "cancelled by the client" in svc.log_tail(50)
    # The service is free again for the next caller.
    replies = stream(stub, data)
    assert any("madrid" in plain(r.text) for r in replies if r.is_final)
